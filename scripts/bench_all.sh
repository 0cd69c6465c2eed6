#!/usr/bin/env bash
# Runs every benchmark under bench/ in one go on this machine and keeps each one's output, so the
# README's benchmark tables come from one run of one script: training steps (train_bench, lathe's
# Trainer against a PyTorch eager loop), data loading (data_bench), checkpoint save/load
# (ckpt_bench), generation (generate_bench), data-parallel scaling (dist_bench), the optimizer
# step (step_bench), the zoo's own CPU kernels against ATen's (kernel_bench), the demo's epoch against a plain PyTorch loop (demo_epoch.py) and predict's
# time to first answer on a ResNet-50 run (predict_startup.py). The load average before each
# benchmark is printed with it: numbers measured on a busy machine say little.
#
#   scripts/bench_all.sh                 # all of them; outputs under runs/bench/<name>.txt
#   scripts/bench_all.sh train ckpt      # only those (names: train data ckpt generate dist step kernel demo predict)
#
# LATHE_BUILD_DIR: a Release build folder (default build/release); the benchmarks are turned on
# and built there when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${LATHE_BUILD_DIR:-build/release}
python=.venv/bin/python
if [ ! -f "$build/CMakeCache.txt" ]; then
  scripts/bootstrap.sh
  cmake --preset release -DLATHE_BUILD_BENCH=ON >/dev/null
elif ! grep -q '^LATHE_BUILD_BENCH:BOOL=ON' "$build/CMakeCache.txt"; then
  cmake "$build" -DLATHE_BUILD_BENCH=ON >/dev/null
fi
cmake --build "$build" --target lathe train_bench data_bench ckpt_bench generate_bench dist_bench \
  step_bench kernel_bench >/dev/null
out=runs/bench
mkdir -p "$out"

all=(train data ckpt generate dist step kernel demo predict)
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=("${all[@]}")
for name in "${wanted[@]}"; do
  case " ${all[*]} " in *" $name "*) ;; *) echo "bench_all: unknown benchmark '$name' (the names: ${all[*]})" >&2; exit 2 ;; esac
done

run() {  # run NAME COMMAND...: prints the load, runs the command, keeps its output
  local name=$1
  shift
  echo "== $name: $*   [load: $(cut -d' ' -f1-3 /proc/loadavg)]"
  "$@" 2>&1 | tee "$out/$name.txt"
}
for name in "${wanted[@]}"; do
  case $name in
    train) run train "$build/bench/train_bench" --python "$python" --script bench/train_bench.py \
             --threads 1 --rounds 3 ;;
    data) run data "$build/bench/data_bench" --python "$python" --script bench/data_bench.py ;;
    ckpt) run ckpt "$python" bench/ckpt_bench.py "$build/bench/ckpt_bench" 5 ;;
    generate) run generate "$python" bench/generate_bench.py "$build/bench/generate_bench" 2 128 ;;
    dist) run dist "$build/bench/dist_bench" 2 ;;
    step) run step "$build/bench/step_bench" ;;
    kernel) run kernel "$build/bench/kernel_bench" ;;
    demo) run demo "$python" bench/demo_epoch.py "$build/lathe" --threads 1 --rounds 2 ;;
    predict) run predict "$python" bench/predict_startup.py "$build/lathe" --rounds 5 ;;
  esac
done
echo "== done [load: $(cut -d' ' -f1-3 /proc/loadavg)]; outputs in $out/"
