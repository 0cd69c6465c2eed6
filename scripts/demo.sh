#!/usr/bin/env bash
# The demo: install what is missing, build the release `lathe`, train the Fashion-MNIST CNN, then
# export it to ONNX (<run>/model.onnx, with a Triton model repository in <run>/triton/).
# Extra arguments are config overrides, e.g. scripts/demo.sh trainer.max_epochs=1
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cmake --preset release >/dev/null
cmake --build --preset release
build/release/lathe train configs/fashion_cnn.yaml "$@"
dir=runs name=fashion_cnn
for arg in "$@"; do
  case "$arg" in run.dir=*) dir=${arg#run.dir=} ;; run.name=*) name=${arg#run.name=} ;; esac
done
build/release/lathe export "$dir/$name" --triton
