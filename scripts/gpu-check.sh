#!/usr/bin/env bash
# What a CUDA machine runs to check lathe: the tests labelled gpu and a short training benchmark
# against PyTorch, in under 8 minutes, without internet.
#
#   scripts/gpu-check.sh [TORCH_PREFIX]      # TORCH_PREFIX: torch's CMake prefix; default: python3's
#   scripts/gpu-check.sh --pack              # here: build the gpu preset, pack build/gpu-carry
#
# lathe comes from, in this order: $LATHE_BUILD_DIR (an existing build folder), build/gpu-carry
# (a packed build carried from another machine: `--pack` there), build/gpu (built before), or a
# fresh `cmake --preset gpu` build against TORCH_PREFIX (needs the Debian packages of
# scripts/bootstrap.sh and nvcc). Without CUDA the gpu tests skip and the benchmark runs its CPU
# cases, which checks this script's logic anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start=$SECONDS
log() { echo "[gpu-check $((SECONDS - start))s] $*"; }

python=${PYTHON:-python3}
pack=0
if [ "${1:-}" = "--pack" ]; then pack=1; shift; fi
torch_prefix=${1:-${TORCH_PREFIX:-}}
if [ -z "$torch_prefix" ]; then
  if [ -x .venv/bin/python ] && [ "$pack" = 1 ]; then python=.venv/bin/python; fi
  torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
fi
torch_lib=$(cd "$torch_prefix/../../lib" && pwd)   # site-packages/torch/lib
log "torch: $torch_prefix"

build_gpu() {
  local nvcc
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  cmake --preset gpu -DCMAKE_PREFIX_PATH="$torch_prefix" -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DCUDAToolkit_ROOT="$(dirname "$(dirname "$nvcc")")" >/dev/null
  cmake --build build/gpu --target test_gpu test_models train_bench lathe_cli
}

if [ "$pack" = 1 ]; then
  # A self-contained subset of a build (stripped binaries, the ctest files, the non-torch shared
  # libraries they need) that the device tool can carry: carry=["build/gpu-carry"]. Packs
  # $LATHE_BUILD_DIR when set, else builds the gpu preset.
  if [ -n "${LATHE_BUILD_DIR:-}" ]; then
    src=$LATHE_BUILD_DIR
    # The carried set includes the benchmark: turn it on in that build if it is off.
    grep -q '^LATHE_BUILD_BENCH:BOOL=ON' "$src/CMakeCache.txt" ||
      cmake "$src" -DLATHE_BUILD_BENCH=ON >/dev/null
    cmake --build "$src" --target test_gpu test_models train_bench lathe_cli
  else
    build_gpu
    src=build/gpu
  fi
  src=$(cd "$src" && pwd)
  out=build/gpu-carry
  rm -rf "$out" && mkdir -p "$out/tests" "$out/bench" "$out/lib"
  cp "$src/CTestTestfile.cmake" "$out/"
  cp "$src"/tests/CTestTestfile.cmake "$src"/tests/*_include.cmake \
     "$src"/tests/test_gpu*_tests.cmake "$src"/tests/test_models*_tests.cmake \
     "$src"/tests/lathe_test_paths.txt "$out/tests/"
  for exe in tests/test_gpu tests/test_models bench/train_bench lathe; do
    strip -o "$out/$exe" "$src/$exe"
  done
  # Shared libraries outside torch, CUDA and the C runtime (yaml-cpp, protobuf, onnx, ...).
  ldd "$src/tests/test_gpu" "$src/lathe" | awk '/=> \// {print $3}' | sort -u |
    grep -v -e "$torch_lib" -e /nvidia/ -e 'libc\.so' -e 'libm\.so' -e 'libstdc++' -e 'libgcc_s' \
      -e 'ld-linux' -e 'libpthread' -e 'libdl\.so' -e 'librt\.so' -e 'libutil' -e 'libz\.so' |
    while read -r lib; do cp -L "$lib" "$out/lib/"; done
  echo "$src" >"$out/ORIGIN"
  log "packed $out ($(du -sh "$out" | cut -f1)) from $src; carry it to the GPU machine and run" \
    "scripts/gpu-check.sh there"
  exit 0
fi

if [ -n "${LATHE_BUILD_DIR:-}" ]; then
  build=$LATHE_BUILD_DIR
elif [ -f build/gpu-carry/ORIGIN ]; then
  # ctest's files name the folder the build was made in: make that path lead here.
  origin=$(cat build/gpu-carry/ORIGIN)
  if [ "$origin" != "$root/build/gpu-carry" ] && [ ! -e "$origin" ]; then
    mkdir -p "$(dirname "$origin")" && ln -s "$root/build/gpu-carry" "$origin"
  fi
  build=$origin
  export LD_LIBRARY_PATH="$root/build/gpu-carry/lib:$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  log "using the carried build (made in $origin)"
elif [ -x build/gpu/tests/test_gpu ]; then
  build=build/gpu
else
  log "building lathe (preset gpu)"
  build_gpu
  build=build/gpu
fi
# torch's libraries and the CUDA runtime beside them (our binaries need libcudart directly; a
# carried build's RUNPATH names the folders of the machine it was built on).
nvidia_libs=$(find "$torch_lib/../../nvidia" -maxdepth 2 -type d -name lib 2>/dev/null | paste -sd:)
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$torch_lib${nvidia_libs:+:$nvidia_libs}"

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
cuda=$("$python" -c 'import torch; print(int(torch.cuda.is_available()))')
log "CUDA available to torch: $cuda"

log "tests labelled gpu"
status=0
ctest_log=$(mktemp)
timeout 300 ctest --test-dir "$build" -L gpu --output-on-failure --timeout 240 | tee "$ctest_log" ||
  status=$?
# Where torch sees a GPU, a skipped gpu test is a failure: the check must not pass empty.
skipped=$(grep -c '(Skipped)' "$ctest_log" || true)
if [ "$cuda" = 1 ] && [ "$skipped" -gt 0 ]; then
  log "FAIL: $skipped gpu test(s) skipped although CUDA is available:"
  grep '(Skipped)' "$ctest_log"
  status=1
fi
rm -f "$ctest_log"

log "training benchmark (lathe vs PyTorch eager)"
if [ "$cuda" = 1 ]; then
  cases=mlp,resnet18,gpt_tiny,gpt2_124m
else
  cases=mlp,gpt_tiny
fi
# BENCH_THREADS: intra-op threads of both sides (default: every core).
timeout 240 "$build/bench/train_bench" --python "$python" --script bench/train_bench.py \
  --cases "$cases" --quick ${BENCH_THREADS:+--threads "$BENCH_THREADS"} || status=$?
log "done (exit $status)"
exit "$status"
