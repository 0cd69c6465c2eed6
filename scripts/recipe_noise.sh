#!/usr/bin/env bash
# The noise band of a recipe: reruns it with run.seed 1..N (the data, the model's initialisation,
# the order and dropout all drawn from it) and prints each seed's metric and the spread, the
# source of the bands scripts/recipes.sh checks (key~reference:band).
#
#   scripts/recipe_noise.sh configs/finetune/finetune_fashion_tops.yaml accuracy 8 \
#       model.pretrained=runs/recipes/fashion/model.safetensors
#
# LATHE: the lathe binary (default build/release/lathe).
set -euo pipefail
cd "$(dirname "$0")/.."
lathe=${LATHE:-build/release/lathe}
config=$1 key=$2 seeds=$3
shift 3
out=runs/recipe_noise/$(basename "$config" .yaml)
mkdir -p "$out"
values=()
for s in $(seq 1 "$seeds"); do
  "$lathe" train "$config" run.dir="$out" run.name="seed$s" run.seed="$s" trainer.progress=none \
    "$@" >"$out/seed$s.log" 2>&1 || { echo "seed $s failed: see $out/seed$s.log" >&2; exit 1; }
  v=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" \
    "$out/seed$s/test_metrics.json" "$key")
  echo "seed $s: $key $v"
  values+=("$v")
done
.venv/bin/python - "${values[@]}" <<'PY'
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
print(f"min {min(v):.4f} max {max(v):.4f} mean {statistics.mean(v):.4f} "
      f"sd {statistics.stdev(v) if len(v) > 1 else 0:.4f} spread (max - min) {max(v) - min(v):.4f}")
PY
