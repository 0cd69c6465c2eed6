"""conv_layouts: each distinct convolution of ResNet-18 (32x32 stem, batch 16), NCHW against
channels-last (NHWC), forward and backward, in PyTorch on the CPU: the measurement behind
models::channels_last_parts_on_cpu (the stem, layer1 and layer2 train channels-last there).

  .venv/bin/python bench/conv_layouts.py [--threads 1]

Prints one row per convolution shape (how many ResNet-18 has of it, ms per call, best of 5 rounds)
and the totals per stage group. The backward is the weight gradient and, except for the stem whose
input is the batch, the input gradient.
"""
import argparse
import time

import torch

# (in channels, out channels, side, stride, kernel, count in ResNet-18, stage)
SHAPES = [(3, 64, 32, 1, 3, 1, "stem"), (64, 64, 32, 1, 3, 4, "layer1"),
          (64, 128, 32, 2, 3, 1, "layer2"), (128, 128, 16, 1, 3, 3, "layer2"),
          (64, 128, 32, 2, 1, 1, "layer2"), (128, 256, 16, 2, 3, 1, "layer3"),
          (256, 256, 8, 1, 3, 3, "layer3"), (128, 256, 16, 2, 1, 1, "layer3"),
          (256, 512, 8, 2, 3, 1, "layer4"), (512, 512, 4, 1, 3, 3, "layer4"),
          (256, 512, 8, 2, 1, 1, "layer4")]


def best_ms(fn, calls=5, rounds=5):
    for _ in range(2):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return min(times) * 1e3


def measure(cin, cout, side, stride, k, channels_last):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
    x = torch.randn(16, cin, side, side)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(cin != 3)
    wrt = ([x] if cin != 3 else []) + [conv.weight]
    g = torch.randn_like(conv(x))
    fwd = best_ms(lambda: conv(x))
    both = best_ms(lambda: torch.autograd.grad(conv(x), wrt, g))
    return fwd, max(both - fwd, 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"conv_layouts: torch {torch.__version__}, {args.threads} thread(s), ms per call")
    print(f"{'shape (in,out,side,stride,k)':<30} {'n':>2} {'stage':<7} {'NCHW fwd':>9} {'bwd':>7}"
          f" {'NHWC fwd':>9} {'bwd':>7} {'NHWC/NCHW':>10}")
    groups = {}
    for cin, cout, side, stride, k, n, stage in SHAPES:
        nchw, nhwc = measure(cin, cout, side, stride, k, False), measure(cin, cout, side, stride, k, True)
        ratio = sum(nhwc) / sum(nchw)
        print(f"{str((cin, cout, side, stride, k)):<30} {n:>2} {stage:<7} {nchw[0]:>9.2f} {nchw[1]:>7.2f}"
              f" {nhwc[0]:>9.2f} {nhwc[1]:>7.2f} {ratio:>10.2f}")
        group = "stem..layer2" if stage in ("stem", "layer1", "layer2") else "layer3..4"
        a, b = groups.get(group, (0.0, 0.0))
        groups[group] = (a + n * sum(nchw), b + n * sum(nhwc))
    for group, (a, b) in groups.items():
        print(f"{group}: NCHW {a:.1f} ms, NHWC {b:.1f} ms per step (forward + backward), NHWC/NCHW {b / a:.2f}")


if __name__ == "__main__":
    main()
