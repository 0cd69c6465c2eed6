"""Checkpoint I/O: lathe (safetensors, atomic write with fsync) against torch.save / torch.load of
the same ResNet-50-sized state dict, in one run on the same disk. Best of N repeats each. Each file
is loaded right after it is written, so both sides read from a warm page cache. "load" ends when
the loaded tensors are freed; "load into a model" also copies every tensor into a model-sized set
of tensors (lathe's load_weights, PyTorch's load_state_dict). torch.load(mmap=True) is shown too.

  python bench/ckpt_bench.py build/release/bench/ckpt_bench [repeats]
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import torch


def resnet50_like():
    sd, inp = {"conv1.weight": torch.randn(64, 3, 7, 7)}, 64
    for s, (out, blocks) in enumerate(zip((256, 512, 1024, 2048), (3, 4, 6, 3))):
        mid = out // 4
        for b in range(blocks):
            p = f"layer{s + 1}.{b}."
            sd[p + "conv1.weight"] = torch.randn(mid, inp if b == 0 else out, 1, 1)
            sd[p + "conv2.weight"] = torch.randn(mid, mid, 3, 3)
            sd[p + "conv3.weight"] = torch.randn(out, mid, 1, 1)
            for bn in ("bn1", "bn2", "bn3"):
                c = out if bn == "bn3" else mid
                sd[p + bn + ".weight"] = torch.randn(c)
                sd[p + bn + ".bias"] = torch.randn(c)
        inp = out
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    return sd


def main():
    binary, repeats = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.set_num_threads(1)  # as the C++ side: on 2 shared cores, 2 OpenMP threads stall in copy_
    with tempfile.TemporaryDirectory(dir=".") as d:
        ours = json.loads(subprocess.check_output([binary, d, str(repeats)]))
        sd, path = resnet50_like(), os.path.join(d, "bench.pt")
        save_s = load_s = into_s = mmap_s = float("inf")
        params = {k: torch.empty_like(v) for k, v in sd.items()}
        for _ in range(repeats):
            t0 = time.perf_counter()
            with open(path, "wb") as f:  # torch.save with the same durability as lathe: fsync
                torch.save(sd, f)
                f.flush()
                os.fsync(f.fileno())
            t1 = time.perf_counter()
            loaded = torch.load(path)
            del loaded
            t2 = time.perf_counter()
            loaded = torch.load(path)
            with torch.no_grad():
                for k, v in params.items():
                    v.copy_(loaded[k])
            del loaded
            t3 = time.perf_counter()
            loaded = torch.load(path, mmap=True)
            del loaded
            t4 = time.perf_counter()
            save_s, load_s = min(save_s, t1 - t0), min(load_s, t2 - t1)
            into_s, mmap_s = min(into_s, t3 - t2), min(mmap_s, t4 - t3)
    mb = ours["values"] * 4 / 1e6
    print(f"state dict: {ours['tensors']} tensors, {mb:.0f} MB float32")
    print(f"save: lathe {ours['save_s']:.3f}s  torch.save {save_s:.3f}s  ratio {ours['save_s'] / save_s:.2f}")
    print(f"load: lathe {ours['load_s']:.3f}s  torch.load {load_s:.3f}s  ratio {ours['load_s'] / load_s:.2f}"
          f"  (torch.load(mmap=True) {mmap_s:.3f}s)")
    print(f"load into a model: lathe {ours['load_into_s']:.3f}s  torch.load + copy {into_s:.3f}s  "
          f"ratio {ours['load_into_s'] / into_s:.2f}")
    total = (ours["save_s"] + ours["load_s"]) / (save_s + load_s)
    print(f"save + load: lathe / PyTorch = {total:.2f} (below 1: lathe is faster)")


if __name__ == "__main__":
    main()
