"""Python oracle for the LoRA parity tests (tests/unit/test_lora.cpp): peft 0.21 on the Hugging
Face models with lathe's weights.

  lora_oracle.py DIR CASE...

For each CASE (a folder DIR/CASE that the C++ test wrote: spec.json, base.safetensors — lathe's
base weights —, lathe/ — the adapter lathe saved —, io.safetensors — input, probe, lathe's output
and the gradients of loss = mean(output * probe) —, merged.safetensors — lathe's merged weights):

1. get_peft_model with LoraConfig(target_modules, r, lora_alpha) on the reference model: the
   modules peft adapts must be the ones lathe adapted (same matching rules);
2. PeftModel.from_pretrained(model, DIR/CASE/lathe): peft loads lathe's files; its output and
   the gradients of its trainable parameters are compared with lathe's; merge_and_unload()'s
   weights with lathe's merged ones;
3. a fresh peft model with random adapters (seeded) saves DIR/CASE/peft (save_pretrained) and
   its output to DIR/CASE/peft_io.safetensors, for the C++ test to load with lathe.

Writes DIR/result.json: {CASE: {"adapted_equal": bool, "adapted": count, "output": max abs diff,
"grads": max abs diff over every trainable tensor, "grad_scale": the largest gradient,
"grad_names_equal": bool, "merged": max abs diff}}.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)


def build(spec, base):
    from transformers import (BertConfig, BertForSequenceClassification, GPT2Config,
                              GPT2LMHeadModel)
    if spec["model"] == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2,
                                           n_head=4, bos_token_id=0, eos_token_id=0))
        allowed_missing = {"lm_head.weight"}  # tied to transformer.wte.weight
    else:
        model = BertForSequenceClassification(BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=32, num_labels=3))
        allowed_missing = set()
    missing, unexpected = model.load_state_dict(base, strict=False)
    assert not unexpected and set(missing) <= allowed_missing, (missing, unexpected)
    return model.eval()


def logits(spec, model, ids):
    if spec["model"] == "gpt2":
        return model(input_ids=ids).logits
    return model(input_ids=ids, attention_mask=(ids != 0).long()).logits  # lathe's default mask


def config(spec):
    task = {"gpt2": "CAUSAL_LM", "bert_classifier": "SEQ_CLS"}[spec["model"]]
    return LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"],
                      fan_in_fan_out=spec["model"] == "gpt2", task_type=task)


def saved_name(name):
    """A PeftModel parameter's name as save_pretrained writes it (no adapter name, no wrapper)."""
    return name.replace(".modules_to_save.default", "").replace(".default", "")


def max_diff(a, b):
    return float((a.double() - b.double()).abs().max())


def run_case(folder):
    spec = json.load(open(os.path.join(folder, "spec.json")))
    base = load_file(os.path.join(folder, "base.safetensors"))
    io = load_file(os.path.join(folder, "io.safetensors"))
    lathe_adapter = load_file(os.path.join(folder, "lathe", "adapter_model.safetensors"))
    result = {}

    # 1. The same targets adapt the same modules.
    fresh = get_peft_model(build(spec, base), config(spec))
    peft_adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in fresh.named_parameters() if ".lora_A." in n}
    lathe_adapted = {n.rsplit(".lora_A", 1)[0] for n in lathe_adapter if ".lora_A." in n}
    result["adapted_equal"] = {saved_name(n) for n in peft_adapted} == lathe_adapted
    result["adapted"] = len(lathe_adapted)

    # 2. peft loads lathe's adapter: outputs, gradients, merged weights.
    model = PeftModel.from_pretrained(build(spec, base), os.path.join(folder, "lathe"),
                                      is_trainable=True).eval()
    out = logits(spec, model, io["input"])
    (out * io["probe"]).mean().backward()
    result["output"] = max_diff(out.detach(), io["output"])
    grads = {saved_name(n): p.grad for n, p in model.named_parameters() if p.requires_grad}
    lathe_grads = {k[len("grad."):]: v for k, v in io.items() if k.startswith("grad.")}
    result["grad_names_equal"] = set(grads) == set(lathe_grads)
    result["grads"] = max(max_diff(g, lathe_grads[n]) for n, g in grads.items() if n in lathe_grads)
    result["grad_scale"] = max(float(g.abs().max()) for g in grads.values())
    merged = model.merge_and_unload().state_dict()
    lathe_merged = load_file(os.path.join(folder, "merged.safetensors"))
    result["merged"] = max(max_diff(merged[n], t) for n, t in lathe_merged.items())

    # 3. An adapter peft trained (random here), saved by save_pretrained, for lathe to load.
    torch.manual_seed(1)
    trained = get_peft_model(build(spec, base), config(spec))
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    trained.save_pretrained(os.path.join(folder, "peft"))
    with torch.no_grad():
        save_file({"output": logits(spec, trained.eval(), io["input"]).contiguous()},
                  os.path.join(folder, "peft_io.safetensors"))
    return result


def main():
    root, cases = sys.argv[1], sys.argv[2:]
    result = {case: run_case(os.path.join(root, case)) for case in cases}
    with open(os.path.join(root, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
