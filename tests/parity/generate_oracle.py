"""Python oracle for lathe generate: a small random GPT-2 from transformers, its weights in the
Hugging Face format, and what GPT2LMHeadModel.generate makes of a prompt.

  generate_oracle.py OUT_DIR NEW_TOKENS

writes OUT_DIR/hf/model.safetensors (save_pretrained: safetensors, tied lm_head left out),
OUT_DIR/prompt.txt (the prompt's token ids), OUT_DIR/greedy.txt (the ids generate(do_sample=False,
max_new_tokens=NEW_TOKENS) adds) and OUT_DIR/sampled.txt (do_sample=True, temperature 0.8,
top_k 20, top_p 0.9 after torch.manual_seed(7)). End-of-sequence stopping is off: lathe's byte
vocabularies have no end token, so both sides make exactly NEW_TOKENS tokens.
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    out_dir, new_tokens = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    torch.set_num_threads(1)
    # initializer_range 0.2: logits of order 1, so the greedy choice is never a near tie.
    config = GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0, initializer_range=0.2)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(os.path.join(out_dir, "hf"), safe_serialization=True)
    prompt = torch.randint(0, 96, (1, 7))
    common = dict(max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0,
                  attention_mask=torch.ones_like(prompt))
    with torch.no_grad():
        greedy = model.generate(prompt, do_sample=False, **common)
        torch.manual_seed(7)
        sampled = model.generate(prompt, do_sample=True, temperature=0.8, top_k=20, top_p=0.9,
                                 **common)
    write = lambda name, ids: open(os.path.join(out_dir, name), "w").write(
        " ".join(str(int(i)) for i in ids) + "\n")
    write("prompt.txt", prompt[0])
    write("greedy.txt", greedy[0, prompt.shape[1]:])
    write("sampled.txt", sampled[0, prompt.shape[1]:])


if __name__ == "__main__":
    main()
