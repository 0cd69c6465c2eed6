"""Time to first answer of `lathe predict` on a ResNet-50 run: from starting the process to the
first answer line on its stdout (the CSV header comes first; the line after it is the answer).

  .venv/bin/python bench/predict_startup.py LATHE [LATHE2 ...] [--rounds 5]

Makes once (under /tmp/lathe-predict-startup): a two-class folder of 64x64 JPEGs and a ResNet-50
run trained for one step on it at 224 px (random initial weights, no download: the time does not
depend on what the weights are; model.safetensors is 94 MB), with the first LATHE given. Then
each round starts every LATHE in turn on one query JPEG (the rounds alternate, so machine load
hits each alike) and prints the per-binary median and best, with the load average. The weights
file is in the page cache after the first round (warm start); the first round is left out.
"""
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path("/tmp/lathe-predict-startup")
CONFIG = """run:
  name: resnet50
  dir: {root}/runs
  seed: 0
  threads: 1   # one intra-op thread: on 2 cores shared with other work, 2 OpenMP threads stall
data:
  source: image_folder
  path: {root}/images
  image_size: 224
  batch_size: 2
  val_fraction: 0.25
model:
  name: resnet50
trainer:
  max_steps: 1
  max_epochs: 1
"""


def make_run(lathe):
    run = ROOT / "runs" / "resnet50"
    if (run / "model.safetensors").exists():
        return run
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (ROOT / "images" / c).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(img).save(ROOT / "images" / c / f"{i}.jpg", quality=90)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(ROOT / "query.jpg")
    (ROOT / "run.yaml").write_text(CONFIG.format(root=ROOT))
    subprocess.run([lathe, "train", str(ROOT / "run.yaml")], check=True, stdout=subprocess.DEVNULL)
    return run


def first_answer(lathe, run):
    """Seconds from starting `lathe predict` to its first answer line."""
    t0 = time.perf_counter()
    p = subprocess.Popen([lathe, "predict", str(run), str(ROOT / "query.jpg")],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    header = p.stdout.readline()
    answer = p.stdout.readline()
    dt = time.perf_counter() - t0
    p.communicate()
    assert header.startswith("id,") and "query.jpg" in answer, (header, answer)
    return dt


def process_start(lathe):
    """Seconds `lathe --help` takes: loading the program and LibTorch's libraries, the floor."""
    t0 = time.perf_counter()
    subprocess.run([lathe, "--help"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main():
    args = sys.argv[1:]
    rounds = 5
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args[i + 1])
        del args[i:i + 2]
    run = make_run(args[0])
    times = {b: [] for b in args}
    floor = {b: [] for b in args}
    for r in range(rounds + 1):
        for b in args:
            t, f = first_answer(b, run), process_start(b)
            if r > 0:
                times[b].append(t)
                floor[b].append(f)
    load = os.getloadavg()[0]
    size = (run / "model.safetensors").stat().st_size / 1e6
    print(f"lathe predict, ResNet-50 run ({size:.0f} MB model.safetensors), one 64x64 JPEG, "
          f"{rounds} rounds, warm page cache, load average {load:.1f}")
    for b, ts in times.items():
        print(f"{b}: time to first answer median {statistics.median(ts):.3f} s, best {min(ts):.3f} s "
              f"(of which starting the process, `lathe --help`: median {statistics.median(floor[b]):.3f} s)")


if __name__ == "__main__":
    main()
