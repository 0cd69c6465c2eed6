#!/usr/bin/env bash
# The demo: install what is missing, build the release `lathe`, train the Fashion-MNIST CNN.
# Extra arguments are config overrides, e.g. scripts/demo.sh trainer.max_epochs=1
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec build/release/lathe train configs/fashion_cnn.yaml "$@"
