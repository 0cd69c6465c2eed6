#!/usr/bin/env bash
# The examples as outside projects: installs a built lathe into a fresh prefix, configures and
# builds each examples/<name>/ against it with find_package(lathe) alone, runs each for a few
# epochs and checks what they print and write (scripts/examples_check.py): the loss falls, the
# checkpoint resumes where it stopped, the ONNX files match the modules in onnxruntime, the user
# metric matches scikit-learn, data-parallel training matches one process. Any mismatch fails.
#
#   scripts/examples.sh [BUILD_DIR]     (default build/ci; run by scripts/test.sh after ctest)
#
# Everything goes under BUILD_DIR/examples/ (a fixed path, wiped first, so that ccache hits
# from one run to the next; the examples' objects hash the same from any checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$(realpath "${1:-build/ci}")
work=$build/examples
python=$root/.venv/bin/python
examples=(custom_model register_model custom_metric)

rm -rf "$work"
mkdir -p "$work/out"
start=$SECONDS
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"

# Compiled through ccache like lathe itself (cmake/Ccache.cmake's settings), two jobs at most.
launcher=()
if command -v ccache >/dev/null; then
  export CCACHE_BASEDIR=$root CCACHE_NOHASHDIR=true CCACHE_MAXSIZE=8G \
    CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
for name in "${examples[@]}"; do
  echo "examples: building $name against $work/prefix"
  if ! cmake -G Ninja -S "examples/$name" -B "$work/build/$name" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$work/prefix" "${launcher[@]}" >"$work/build-$name.log" 2>&1 ||
    ! cmake --build "$work/build/$name" -j 2 >>"$work/build-$name.log" 2>&1; then
    cat "$work/build-$name.log"
    echo "examples: FAILED to build $name as an outside project (log above)" >&2
    exit 1
  fi
done
built=$SECONDS

# run NAME ARGS...: runs an example, its output in out/NAME.txt; a failure shows that output.
run() {
  local name=$1 bin=$2
  shift 2
  echo "examples: running $name"
  if ! "$work/build/$bin/$bin" "$@" >"$work/out/$name.txt" 2>&1; then
    cat "$work/out/$name.txt"
    echo "examples: $name FAILED (output above)" >&2
    exit 1
  fi
}
run custom_model custom_model "$work/out/custom_model"
run register_model register_model examples/register_model/run.yaml "$work/out/register_model"
run register_model_ddp register_model examples/register_model/run.yaml \
  "$work/out/register_model_ddp" --devices 2
run custom_metric custom_metric "$work/out/custom_metric"
"$python" scripts/examples_check.py "$work/out"
echo "examples: ok (install + build ${examples[*]}: $((built - start))s, runs and checks:" \
  "$((SECONDS - built))s)"
