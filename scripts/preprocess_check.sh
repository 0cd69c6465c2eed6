#!/usr/bin/env bash
# Checks `lathe export --preprocess` on the recipes' runs and prints the docs' numbers: trains
# wine_mlp and diabetes_regression (as configured), the tree and SVM recipes of wine and diabetes
# (configs/tabular/: xgboost, random_forest, svm) and the demo CNN (1 epoch on 3000 images),
# exports each with --preprocess, runs the file in onnxruntime on raw records
# (tests/parity/preprocess_oracle.py: the whole wine / diabetes CSVs, 200 Fashion-MNIST test
# images as PNGs) and compares with `lathe predict` on the same records.
#
#   scripts/preprocess_check.sh        # runs under runs/preprocess_check/
#
# LATHE: the lathe binary (default build/ci/lathe).
set -euo pipefail
cd "$(dirname "$0")/.."
lathe=${LATHE:-build/ci/lathe}
python=.venv/bin/python
oracle=tests/parity/preprocess_oracle.py
out=runs/preprocess_check
mkdir -p "$out/pngs"

"$lathe" train configs/wine_mlp.yaml run.dir="$out" trainer.progress=none >/dev/null 2>&1
"$lathe" train configs/diabetes_regression.yaml run.dir="$out" trainer.progress=none >/dev/null 2>&1
for recipe in wine_xgboost wine_forest wine_svm diabetes_xgboost diabetes_forest diabetes_svm; do
  "$lathe" train "configs/tabular/$recipe.yaml" run.dir="$out" trainer.progress=none >/dev/null 2>&1
done
"$lathe" train configs/fashion_cnn.yaml run.dir="$out" trainer.progress=none trainer.max_epochs=1 \
  data.limit_train=3000 data.limit_test=200 >/dev/null 2>&1
"$python" - "$out/pngs" <<'EOF'
import gzip, sys
import numpy as np
from PIL import Image
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
for i in range(200):
    Image.fromarray(images[i]).save(f"{sys.argv[1]}/img_{i:03}.png")
EOF

check() {  # name, run, kind (--csv | --images), records...
  local name=$1 run=$2 kind=$3
  shift 3
  "$lathe" export "$run" --preprocess -o "$out/$name.onnx" 2>/dev/null
  "$lathe" predict "$run" "$@" --top-k 100 -o "$out/$name.jsonl" 2>/dev/null
  "$python" "$oracle" "$out/$name.onnx" "$out/${name}_ort.json" "$kind" "$@"
  "$python" - "$name" "$run/classes.txt" "$out/$name.jsonl" "$out/${name}_ort.json" <<'EOF'
import json, os, sys
name, classes_file, predicted, answered = sys.argv[1:]
ort = json.load(open(answered))["outputs"]
rows = [json.loads(line) for line in open(predicted)]
if "prediction" in ort:
    diffs = [abs(r["value"] - ort["prediction"][i][0]) for i, r in enumerate(rows)]
    scaled = [d / max(1.0, abs(r["value"])) for d, r in zip(diffs, rows)]
    top = max(abs(r["value"]) for r in rows)
    print(f"{name}: {len(rows)} records, max |onnxruntime - predict| value {max(diffs):.2g} "
          f"(values up to {top:.0f}; relative {max(scaled):.2g})")
    sys.exit(0)
classes = [c.strip() for c in open(classes_file) if c.strip()]
same = sum(r["top"][0]["label"] == ort["label"][i] for i, r in enumerate(rows))
worst = max(abs(t["probability"] - ort["probabilities"][i][classes.index(t["label"])])
            for i, r in enumerate(rows) for t in r["top"])
print(f"{name}: {len(rows)} records, labels equal {same}/{len(rows)}, "
      f"max |onnxruntime - predict| probability {worst:.2g}")
EOF
}
check wine_mlp "$out/wine_mlp" --csv datasets/wine.csv
check diabetes_regression "$out/diabetes_regression" --csv datasets/diabetes.csv
for recipe in wine_xgboost wine_forest wine_svm; do
  check "$recipe" "$out/$recipe" --csv datasets/wine.csv
done
for recipe in diabetes_xgboost diabetes_forest diabetes_svm; do
  check "$recipe" "$out/$recipe" --csv datasets/diabetes.csv
done
check fashion_cnn "$out/fashion_cnn" --images $(ls "$out"/pngs/*.png | sort)
