"""Python oracle for the Llama-family parity tests: a small random LlamaForCausalLM,
Qwen2ForCausalLM or MistralForCausalLM from transformers at sizes no other test uses, its
Hugging Face folder, logits, every parameter's gradient, a double-precision and a bf16-autocast
forward, and greedy generation.

  llama_oracle.py CASE OUT_DIR
  llama_oracle.py bert OUT_DIR          a BertForSequenceClassification folder (OUT_DIR/hf) and
                                        its logits (io.safetensors: input_ids, attention_mask,
                                        logits)
  llama_oracle.py check_export FOLDER IO  loads FOLDER with AutoModelForCausalLM.from_pretrained
                                        and compares its logits on IO's input_ids with IO's
                                        logits (lathe's); prints the max difference, exits 1
                                        above 1e-5

CASE is one of CASES below. Writes
  OUT_DIR/hf/            save_pretrained (config.json, model.safetensors, generation_config.json)
  OUT_DIR/hf_sharded/    the same in shards of at most 40 kB (model.safetensors.index.json)
  OUT_DIR/options.txt    the zoo's `llama` options for that config, one key=value a line
  OUT_DIR/io.safetensors input_ids (2, T); logits; grad_output (a fixed random cotangent) and
                         grad.<parameter> (of sum(logits · grad_output)); attention_mask (row 1
                         left-padded) and logits_masked; logits_double (the model in float64);
                         logits_bf16 (transformers under torch.autocast(cpu, bfloat16));
                         prompt (1, P) and greedy (1, P + N): generate(do_sample=False) with the
                         folder's generation_config (its eos_token_id stops it)
  OUT_DIR/params.txt     sum(p.numel() for p in model.parameters())
"""
import copy
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from safetensors.torch import save_file

VOCAB, T = 96, 11

# name: (architecture, config keywords). Head sizes 12, 24, 8, 12, 16 (none is 64); key/value
# head ratios 4:1, 1:1, 3:1, 2:1, 4:1; tied and untied; rope none, linear, llama3.
CASES = {
    "llama_gqa4": ("LlamaForCausalLM", dict(
        hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, rope_theta=10000.0, tie_word_embeddings=False)),
    "llama_mha_tied_linear": ("LlamaForCausalLM", dict(
        hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, head_dim=24, tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0})),
    "llama_llama3_bias": ("LlamaForCausalLM", dict(
        hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, attention_bias=True, mlp_bias=True, tie_word_embeddings=False,
        pad_token_id=0,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16})),
    "qwen2": ("Qwen2ForCausalLM", dict(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0,
        use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    # byte-level text (vocabulary 256) for a training run that starts from the folder
    "bytes": ("LlamaForCausalLM", dict(
        vocab_size=256, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
    "mistral": ("MistralForCausalLM", dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, sliding_window=5, tie_word_embeddings=False,
        rope_theta=1000000.0)),
}


def build(case):
    import transformers
    arch, kw = CASES[case]
    family = {"LlamaForCausalLM": "Llama", "Qwen2ForCausalLM": "Qwen2",
              "MistralForCausalLM": "Mistral"}[arch]
    kw = {"vocab_size": VOCAB, **kw}
    config = getattr(transformers, family + "Config")(max_position_embeddings=64, bos_token_id=1,
                                                      eos_token_id=2, **kw)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config).eval()
    # O(1) activations and gradients: every weight N(0, 0.15), norms 1 + N(0, 0.1), biases too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)
        if config.pad_token_id is not None:
            model.model.embed_tokens.weight[config.pad_token_id].zero_()
    return model


def lathe_options(model):
    """The zoo's llama options for the model's config (what lathe reads from config.json)."""
    c = model.config
    rope = c.rope_parameters
    o = dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
             intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
             num_attention_heads=c.num_attention_heads,
             num_key_value_heads=c.num_key_value_heads,
             head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
             max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps,
             rope_theta=rope["rope_theta"],
             tie_word_embeddings=str(bool(c.tie_word_embeddings)).lower())
    kind = rope.get("rope_type", "default")
    if kind == "linear":
        o.update(rope_scaling="linear", rope_factor=rope["factor"])
    elif kind == "llama3":
        o.update(rope_scaling="llama3", rope_factor=rope["factor"],
                 rope_low_freq_factor=rope["low_freq_factor"],
                 rope_high_freq_factor=rope["high_freq_factor"],
                 rope_original_max_position_embeddings=rope["original_max_position_embeddings"])
    if getattr(c, "attention_bias", False):
        o["attention_bias"] = "true"
    if getattr(c, "mlp_bias", False):
        o["mlp_bias"] = "true"
    if c.model_type == "qwen2":
        o["qkv_bias"] = "true"
        if c.use_sliding_window:
            o.update(sliding_window=c.sliding_window, max_window_layers=c.max_window_layers)
    if c.model_type == "mistral" and c.sliding_window:
        o["sliding_window"] = c.sliding_window
    if c.pad_token_id is not None:
        o["pad_token_id"] = c.pad_token_id
    return o


def bert(out_dir):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=24, num_labels=3,
                        initializer_range=0.2)
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(1, 64, (2, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    model.save_pretrained(os.path.join(out_dir, "hf"))
    save_file({"input_ids": ids, "attention_mask": mask, "logits": logits},
              os.path.join(out_dir, "io.safetensors"))


def check_export(folder, io_file):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, GenerationConfig
    io = load_file(io_file)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    GenerationConfig.from_pretrained(folder)
    with torch.no_grad():
        logits = model(input_ids=io["input_ids"]).logits
    diff = (logits.double() - io["logits"].double()).abs().max().item()
    print(f"{type(model).__name__} max |logits diff| {diff:.3g}")
    sys.exit(0 if diff <= 1e-5 else 1)


def main():
    if sys.argv[1] == "check_export":
        return check_export(sys.argv[2], sys.argv[3])
    case, out_dir = sys.argv[1], sys.argv[2]
    if case == "bert":
        return bert(out_dir)
    torch.set_num_threads(1)
    model = build(case)
    torch.manual_seed(1)
    ids = torch.randint(3, VOCAB, (2, T))
    mask = torch.ones(2, T, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    io = {"input_ids": ids, "attention_mask": mask}

    logits = model(input_ids=ids).logits
    grad_output = torch.randn_like(logits)
    (logits * grad_output).sum().backward()
    io.update(logits=logits.detach(), grad_output=grad_output)
    for name, p in model.named_parameters():
        io["grad." + name] = p.grad
    model.zero_grad()
    with torch.no_grad():
        io["logits_masked"] = model(input_ids=ids, attention_mask=mask).logits
        io["logits_double"] = copy.deepcopy(model).double()(input_ids=ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            io["logits_bf16"] = model(input_ids=ids).logits.float()

        # Greedy generation; the end token is the sixth token a free run makes, so that the
        # folder's generation_config stops it early.
        prompt = ids[:1, :4].clone()
        free = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                              max_new_tokens=12, eos_token_id=None, pad_token_id=0)
        eos = int(free[0, prompt.shape[1] + 5])
        model.config.eos_token_id = eos
        model.generation_config.eos_token_id = eos
        model.generation_config.pad_token_id = 0
        greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                max_new_tokens=12)
        io.update(prompt=prompt, greedy=greedy)

    model.save_pretrained(os.path.join(out_dir, "hf"))
    model.save_pretrained(os.path.join(out_dir, "hf_sharded"), max_shard_size="40KB")
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out_dir, "io.safetensors"))
    with open(os.path.join(out_dir, "options.txt"), "w") as f:
        for k, v in lathe_options(model).items():
            f.write(f"{k}={v}\n")
    with open(os.path.join(out_dir, "params.txt"), "w") as f:
        f.write(f"{sum(p.numel() for p in model.parameters())}\n")


if __name__ == "__main__":
    main()
