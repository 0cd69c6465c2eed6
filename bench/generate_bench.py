"""Greedy generation: lathe's gpt2 with its key/value cache against transformers'
GPT2LMHeadModel.generate(do_sample=False) on the same random weights (a small GPT-2 config saved
with save_pretrained), the same prompt and the same number of threads, in one run. Best of 5
each; both must produce the same tokens.

  python bench/generate_bench.py build/release/bench/generate_bench [threads] [new_tokens]
"""
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import GPT2Config, GPT2LMHeadModel

SIZES = dict(vocab_size=4096, n_positions=512, n_embd=256, n_layer=4, n_head=4)


def main():
    binary = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    new_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**SIZES, bos_token_id=0, eos_token_id=0, initializer_range=0.2)).eval()
    prompt = torch.randint(0, SIZES["vocab_size"], (1, 16))
    with tempfile.TemporaryDirectory(dir=".") as d:
        model.save_pretrained(d, safe_serialization=True)
        args = [binary, os.path.join(d, "model.safetensors")] + [
            str(SIZES[k]) for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
        ] + [",".join(str(int(t)) for t in prompt[0]), str(new_tokens), str(threads)]
        ours = json.loads(subprocess.check_output(args))
    kwargs = dict(do_sample=False, max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0,
                  attention_mask=torch.ones_like(prompt))
    with torch.no_grad():
        out = model.generate(prompt, **kwargs)  # warm-up
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            out = model.generate(prompt, **kwargs)
            best = min(best, time.perf_counter() - t0)
    theirs = [int(t) for t in out[0, prompt.shape[1]:]]
    params = sum(p.numel() for p in model.parameters())
    print(f"gpt2 {SIZES} ({params / 1e6:.1f}M parameters), prompt 16 tokens, {new_tokens} new "
          f"tokens, greedy, {threads} threads, CPU")
    print(f"same tokens as transformers: {ours['ids'] == theirs}; "
          f"lathe without cache gives the same: {ours['same_without_cache']}")
    print(f"lathe (kv cache)      {new_tokens / ours['cached_s']:8.1f} tokens/s")
    print(f"lathe (no cache)      {new_tokens / ours['uncached_s']:8.1f} tokens/s")
    print(f"transformers generate {new_tokens / best:8.1f} tokens/s")
    print(f"lathe / transformers = {best / ours['cached_s']:.2f} (above 1: lathe is faster)")


if __name__ == "__main__":
    main()
