#!/usr/bin/env bash
# Builds the training benchmark and prints lathe / PyTorch per case (bench/train_bench.cpp).
#
#   scripts/bench.sh                      # every case of this device, all cores
#   scripts/bench.sh --cases mlp --threads 1 --quick     # train_bench's own options pass through
#
# LATHE_BUILD_DIR picks the build folder (default build/release, configured with the benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${LATHE_BUILD_DIR:-build/release}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake --preset release -DLATHE_BUILD_BENCH=ON >/dev/null
elif ! grep -q '^LATHE_BUILD_BENCH:BOOL=ON' "$build/CMakeCache.txt"; then
  cmake "$build" -DLATHE_BUILD_BENCH=ON >/dev/null
fi
cmake --build "$build" --target train_bench
exec "$build/bench/train_bench" --python .venv/bin/python --script bench/train_bench.py "$@"
