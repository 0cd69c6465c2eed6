#!/usr/bin/env bash
# Fine-tuning recipe: start from the demo's Fashion-MNIST weights (trained first if missing),
# fine-tune on four confusable classes from 200 images, train the same task from scratch, and
# print both test accuracies. Extra arguments are overrides for the two small runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cmake --preset release >/dev/null
cmake --build --preset release
lathe=build/release/lathe
[ -f runs/fashion_cnn/model.safetensors ] || $lathe train configs/fashion_cnn.yaml
$lathe train configs/finetune/finetune_fashion_tops.yaml "$@"
$lathe train configs/finetune/scratch_fashion_tops.yaml "$@"
acc() { .venv/bin/python -c "import json;print(json.load(open('runs/$1/test_metrics.json'))['accuracy'])"; }
echo "test accuracy, 4 tops from 200 training images: fine-tuned $(acc finetune_fashion_tops), from scratch $(acc scratch_fashion_tops)"
