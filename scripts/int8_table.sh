#!/usr/bin/env bash
# The README's int8 table: for the demo CNN and the MiniLM classifier runs, exports fp32 and int8
# ONNX files (`lathe export --int8`: static QDQ for the CNN, dynamic for the BERT), scores both in
# onnxruntime on the run's test split (`lathe eval --save-inputs` + tests/parity/int8_oracle.py)
# and prints one Markdown row per run: fp32 / int8 accuracy, the delta in points, the share of
# records both files give the same class, the sizes.
#
#   scripts/int8_table.sh                              # runs/fashion_cnn and runs/recipes/minilm
#   scripts/int8_table.sh "demo CNN=runs/fashion_cnn"  # any "label=run folder" pairs
set -euo pipefail
cd "$(dirname "$0")/.."
LATHE=${LATHE:-build/ci/lathe}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/int8}
[ $# -gt 0 ] || set -- "demo CNN (convnet, Fashion-MNIST)=runs/fashion_cnn" \
  "MiniLM classifier (bert_classifier, fortune topics)=runs/recipes/minilm"
mkdir -p "$OUT"
rows=()
for pair in "$@"; do
  label=${pair%%=*} run=${pair#*=}
  name=$(basename "$run")
  "$LATHE" export "$run" -o "$OUT/$name.fp32.onnx" >&2
  "$LATHE" export "$run" -o "$OUT/$name.int8.onnx" --int8 >&2
  "$LATHE" eval "$run" --save-inputs "$OUT/$name.test.safetensors" >&2
  "$PY" tests/parity/int8_oracle.py "$OUT/$name.fp32.onnx" "$OUT/$name.int8.onnx" \
    "$OUT/$name.test.safetensors" > "$OUT/$name.json"
  rows+=("$label|$OUT/$name.json")
done
echo "| model | int8 | test records | fp32 accuracy | int8 accuracy | delta (points) | same class | fp32 MB | int8 MB | ratio |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for row in "${rows[@]}"; do
  "$PY" - "${row%%|*}" "${row#*|}" <<'PY'
import json, sys
label, v = sys.argv[1], json.load(open(sys.argv[2]))
q = v["quantization"]
print(f"| {label} | {q['mode']} | {v['records']} | {100 * v['fp32']:.2f}% | {100 * v['int8']:.2f}% "
      f"| {v['delta_points']:+.2f} | {100 * v['agreement']:.1f}% | {v['fp32_bytes'] / 1e6:.2f} | {v['int8_bytes'] / 1e6:.2f} "
      f"| {v['ratio']:.2f} |")
PY
done
