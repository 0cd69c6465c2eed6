"""demo_epoch: one epoch of the demo (configs/fashion_cnn.yaml) in lathe against the same network
and loop in plain PyTorch, on the same machine, torch and thread count; prints both times and
lathe / PyTorch.

    .venv/bin/python bench/demo_epoch.py build/release/lathe [--threads 1] [--rounds 2]
                                [--limit-train 12000] [--clock wall|cpu]   (from the repository root)

lathe's side is `lathe train configs/fashion_cnn.yaml trainer.max_epochs=1 run.threads=N`; its
epoch time is the `time_s` of metrics.jsonl's epoch row (the training epoch plus the validation
pass after it, data already in memory, start-up and the test pass not counted). PyTorch's side is
what a careful plain loop does with the same data and settings: the IDX files read into memory,
the same stratified 10% hold-out, per-channel normalisation from the training part, batches of
128 drawn by a shuffled index (no per-record DataLoader collation), the convnet (conv 3x3 32 ->
BN -> ReLU -> max pool, conv 3x3 64 -> BN -> ReLU -> max pool, dropout, linear 3136 -> 128, ReLU,
dropout, linear 128 -> 10; torch.nn defaults, ReLU in place as torchvision writes it),
AdamW(lr 3e-3, weight decay 1e-4 on weights, fused=True as lathe's default) with OneCycleLR
(pct_start 0.15, over the config's 6 epochs), cross-entropy, loss summed on the device and read
every 50 steps, then validation (batch 1000) under torch.inference_mode. Rounds alternate the two
sides so that load drift hits both; the median of each side's rounds is reported.

--clock cpu: process CPU time instead of wall time, for a machine shared with other work (wall
time then also counts the time the scheduler gave to others). PyTorch's side reads
time.process_time around the epoch; lathe's is the CPU time of a 2-epoch run less that of a
1-epoch run (start-up, data loading and the test pass cancel out; what is left is one epoch with
its validation and its end-of-epoch checkpoint).
"""
import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIG = "configs/fashion_cnn.yaml"
DATA = "/usr/share/datasets/fashion-mnist"
BATCH, EVAL_BATCH, EPOCHS, LOG_EVERY = 128, 1000, 6, 50


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape).copy())


def load(limit_train):
    x = read_idx(f"{DATA}/train-images-idx3-ubyte.gz").float().div_(255).unsqueeze(1)  # (N, 1, 28, 28)
    y = read_idx(f"{DATA}/train-labels-idx1-ubyte.gz").long()
    if limit_train > 0:
        x, y = x[:limit_train], y[:limit_train]
    g = torch.Generator().manual_seed(42)
    val_idx = []
    for c in range(10):  # stratified 10% hold-out, as lathe's split_holdout
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        val_idx.append(idx[: round(0.1 * len(idx))])
    val_mask = torch.zeros(len(y), dtype=torch.bool)
    val_mask[torch.cat(val_idx)] = True
    xt, yt, xv, yv = x[~val_mask], y[~val_mask], x[val_mask], y[val_mask]
    mean, std = xt.mean().item(), xt.std().item()
    return (xt - mean) / std, yt, (xv - mean) / std, yv


def convnet():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True),
        nn.Dropout(0.25), nn.Linear(128, 10))


def torch_epoch(data, clock=time.perf_counter):
    """Seconds of one training epoch plus validation, as lathe's time_s counts them."""
    xt, yt, xv, yv = data
    torch.manual_seed(42)
    model = convnet()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4},
                             {"params": rest, "weight_decay": 0.0}], lr=3e-3, fused=True)
    steps_per_epoch = (len(yt) + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, pct_start=0.15,
                                                total_steps=EPOCHS * steps_per_epoch)
    t0 = clock()
    model.train()
    order = torch.randperm(len(yt))
    running = torch.zeros(())
    for step in range(steps_per_epoch):
        idx = order[step * BATCH:(step + 1) * BATCH]
        x, y = xt.index_select(0, idx), yt.index_select(0, idx)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running += loss.detach()
        if (step + 1) % LOG_EVERY == 0:
            running.item()
            running.zero_()
    model.eval()
    correct, total_loss = 0, 0.0
    with torch.inference_mode():
        for i in range(0, len(yv), EVAL_BATCH):
            out = model(xv[i:i + EVAL_BATCH])
            total_loss += F.cross_entropy(out, yv[i:i + EVAL_BATCH], reduction="sum").item()
            correct += (out.argmax(1) == yv[i:i + EVAL_BATCH]).sum().item()
    seconds = clock() - t0
    assert correct > 0.5 * len(yv), f"PyTorch side did not learn: {correct}/{len(yv)}"
    return seconds


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def lathe_epoch_cpu(binary, threads, limit_train):
    """CPU seconds of one lathe epoch: a 2-epoch run's less a 1-epoch run's."""
    spent = []
    for epochs in (1, 2):
        t0 = children_cpu_s()
        lathe_epoch(binary, threads, limit_train, epochs)
        spent.append(children_cpu_s() - t0)
    return spent[1] - spent[0]


def lathe_epoch(binary, threads, limit_train, epochs=1):
    with tempfile.TemporaryDirectory() as d:
        args = [binary, "train", CONFIG, f"trainer.max_epochs={epochs}", f"run.threads={threads}",
                f"run.dir={d}", "run.name=demo", "trainer.progress=none",
                "trainer.tensorboard=false", "data.limit_test=1000"]
        if limit_train > 0:
            args.append(f"data.limit_train={limit_train}")
        # lathe sizes the onecycle schedule from trainer.max_epochs; PyTorch's side uses the
        # config's 6 epochs: the schedule's cost per step is the same either way.
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        with open(f"{d}/demo/metrics.jsonl") as f:
            rows = [json.loads(line) for line in f]
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    if not epochs:
        raise RuntimeError(f"no epoch row in lathe's metrics.jsonl: {rows[-3:]}")
    return epochs[-1]["time_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lathe", help="the lathe binary (build/release/lathe)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--limit-train", type=int, default=0,
                    help="train on the first N of the 60k training images (0: all, as the demo)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    a = ap.parse_args()
    cpu = a.clock == "cpu"
    torch.set_num_threads(a.threads)
    data = load(a.limit_train)
    lathe_s, torch_s = [], []
    for r in range(a.rounds):
        lathe_s.append(lathe_epoch_cpu(a.lathe, a.threads, a.limit_train) if cpu
                       else lathe_epoch(a.lathe, a.threads, a.limit_train))
        torch_s.append(torch_epoch(data, time.process_time if cpu else time.perf_counter))
        print(f"round {r + 1}: lathe {lathe_s[-1]:.2f} s, PyTorch {torch_s[-1]:.2f} s",
              file=sys.stderr, flush=True)
    lm, tm = statistics.median(lathe_s), statistics.median(torch_s)
    print(f"demo epoch ({len(data[1])} training images, {a.threads} thread(s), {a.clock} time, torch "
          f"{torch.__version__}): lathe {lm:.2f} s, PyTorch {tm:.2f} s, lathe / PyTorch {lm / tm:.2f}")


if __name__ == "__main__":
    main()
