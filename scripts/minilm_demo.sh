#!/usr/bin/env bash
# Text fine-tuning recipe: the pretrained all-MiniLM-L6-v2 against the same model from random
# weights, classifying Debian fortunes by topic; prints both test accuracies.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cmake --preset release >/dev/null
cmake --build --preset release
build/release/lathe train configs/finetune/minilm_fortunes.yaml "$@"
build/release/lathe train configs/finetune/minilm_fortunes_scratch.yaml "$@"
acc() { .venv/bin/python -c "import json;print(json.load(open('runs/$1/test_metrics.json'))['accuracy'])"; }
echo "test accuracy, fortune topics (4 classes, 140 quotes each): pretrained MiniLM $(acc minilm_fortunes), random init $(acc minilm_fortunes_scratch)"
