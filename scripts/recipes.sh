#!/usr/bin/env bash
# Reruns every recipe under configs/ and prints the recipe table of docs/recipes.md from what the runs
# wrote (test_metrics.json) and how long each `lathe train` took on this machine, so that every
# number in that table comes from here.
#
#   scripts/recipes.sh                 # all recipes, runs under runs/recipes/
#   scripts/recipes.sh wine diabetes   # only those (names: the keys of RECIPES below)
#
# LATHE: the lathe binary (default build/release/lathe, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
lathe=${LATHE:-build/release/lathe}
if [ ! -x "$lathe" ]; then
  scripts/bootstrap.sh
  cmake --preset release >/dev/null
  cmake --build --preset release
fi
out=runs/recipes
mkdir -p "$out"
python=.venv/bin/python

# name | config | metrics to print (keys of test_metrics.json; "params": the trainable
# parameters, "trainable": trainable of all, both from the run's log) | what | claims the script
# checks (key>=value or key<=value; keys as the metrics, plus seconds; or key~reference:band, a
# noise band: the result may be worse than the reference by at most band, the band measured as
# the spread over seeds by scripts/recipe_noise.sh): a recipe that misses one makes the script fail.
RECIPES=(
  "fashion|configs/fashion_cnn.yaml|accuracy|the demo CNN, Fashion-MNIST|accuracy>=0.92"
  "fashion_small|configs/fashion_small.yaml|accuracy,params|Fashion-MNIST's \"2 Conv, <100K parameters\" row (0.925)|accuracy>=0.925 params<=100000 seconds<=300"
  "wine|configs/wine_mlp.yaml|accuracy|CSV classification (wine), standardised"
  "diabetes|configs/diabetes_regression.yaml|r2,rmse|CSV regression (diabetes), median impute, IQR clip, standardise"
  "wine_xgboost|configs/tabular/wine_xgboost.yaml|accuracy|wine, gradient-boosted trees (XGBoost)"
  "wine_forest|configs/tabular/wine_forest.yaml|accuracy|wine, random forest (XGBoost's forest mode)"
  "wine_svm|configs/tabular/wine_svm.yaml|accuracy|wine, SVC (LIBSVM), RBF kernel"
  "breast_cancer|configs/tabular/breast_cancer_mlp.yaml|accuracy,roc_auc|breast cancer, an MLP"
  "breast_cancer_xgboost|configs/tabular/breast_cancer_xgboost.yaml|accuracy,roc_auc|breast cancer, gradient-boosted trees"
  "breast_cancer_forest|configs/tabular/breast_cancer_forest.yaml|accuracy,roc_auc|breast cancer, random forest"
  "breast_cancer_svm|configs/tabular/breast_cancer_svm.yaml|accuracy,roc_auc|breast cancer, SVC, RBF kernel"
  "diabetes_xgboost|configs/tabular/diabetes_xgboost.yaml|r2,rmse|diabetes, gradient-boosted trees"
  "diabetes_forest|configs/tabular/diabetes_forest.yaml|r2,rmse|diabetes, random forest"
  "diabetes_svm|configs/tabular/diabetes_svm.yaml|r2,rmse|diabetes, SVR, RBF kernel"
  "char_lstm|configs/fortunes_char_lstm.yaml|perplexity|byte-level LSTM LM on Debian's fortunes"
  "gpt|configs/fortunes_gpt.yaml|perplexity|small GPT (GPT-2 architecture) on the same text"
  "finetune_tops|configs/finetune/finetune_fashion_tops.yaml|accuracy|fine-tuned from the demo's weights, 4 tops from 200 images|accuracy~0.800:0.026"
  "scratch_tops|configs/finetune/scratch_fashion_tops.yaml|accuracy|the same 4 tops from scratch"
  "minilm|configs/finetune/minilm_fortunes.yaml|accuracy,f1_macro,trainable|pretrained all-MiniLM-L6-v2, fortune topics"
  "minilm_lora|configs/finetune/minilm_fortunes_lora.yaml|accuracy,f1_macro,trainable|the same with LoRA (rank 8, every projection) and the new head training, the encoder frozen"
  "minilm_scratch|configs/finetune/minilm_fortunes_scratch.yaml|accuracy,f1_macro|the same BERT from random weights"
)

wanted=("$@")
selected() {
  [ ${#wanted[@]} -eq 0 ] && return 0
  local w
  for w in "${wanted[@]}"; do [ "$w" = "$1" ] && return 0; done
  return 1
}

rows=()
failed=0
for recipe in "${RECIPES[@]}"; do
  IFS='|' read -r name config keys what claims <<<"$recipe"
  selected "$name" || continue
  extra=()
  # The fine-tuning recipe starts from the demo's weights: point it at this script's demo run.
  if [ "$name" = finetune_tops ]; then
    [ -f "$out/fashion/model.safetensors" ] ||
      "$lathe" train configs/fashion_cnn.yaml run.dir="$out" run.name=fashion >"$out/fashion.log" 2>&1
    extra=(model.pretrained="$out/fashion/model.safetensors")
  fi
  echo "[recipes] $name: $lathe train $config" >&2
  start=$(date +%s.%N)
  "$lathe" train "$config" run.dir="$out" run.name="$name" trainer.progress=none "${extra[@]}" \
    >"$out/$name.log" 2>&1 || { echo "[recipes] $name failed: see $out/$name.log" >&2; exit 1; }
  seconds=$("$python" -c "print(f'{$(date +%s.%N) - $start:.0f}')")
  result=$("$python" - "$out/$name/test_metrics.json" "$keys" "$out/$name.log" "$seconds" \
    "$claims" "$name" <<'EOF'
import json, re, sys
m = json.load(open(sys.argv[1]))
# The run's "model: NAME (N parameters)[, M trainable]" line (estimators have none: 0).
found = re.search(r"model: \S+ \((\d+) parameters\)(?:, (\d+) trainable)?",
                  open(sys.argv[3]).read())
n, t = found.groups() if found else ("0", None)
m["seconds"], m["params"], m["all_params"] = float(sys.argv[4]), int(t or n), int(n)
parts = []
for k in sys.argv[2].split(","):
    if k == "trainable":
        parts.append(f"{m['params']:,} of {m['all_params']:,} parameters trained")
        continue
    v = m[k]
    parts.append(f"{k} {100 * v:.1f}%" if k in ("accuracy", "f1_macro") else
                 f"{v:,} parameters" if k == "params" else f"{k} {v:.3g}")
print(", ".join(parts))
lower_is_better = {"perplexity", "rmse", "loss", "seconds", "params"}
for claim in sys.argv[5].split():
    if "~" in claim:  # key~reference:band: fails when the result is worse by more than the band
        key, rest = claim.split("~")
        ref, band = map(float, rest.split(":"))
        worse = m[key] - ref if key in lower_is_better else ref - m[key]
        if worse > band:
            sys.exit(f"[recipes] {sys.argv[6]}: {key} is {m[key]:g}, worse than its reference "
                     f"{ref:g} by {worse:g}, more than its noise band {band:g}")
        continue
    op = ">=" if ">=" in claim else "<="
    key, bound = claim.split(op)
    if not (m[key] >= float(bound) if op == ">=" else m[key] <= float(bound)):
        sys.exit(f"[recipes] {sys.argv[6]}: the claim {claim} does not hold: {key} is {m[key]:g}")
EOF
) || failed=1
  rows+=("| $config | $what | $result, ${seconds} s |")
done

echo "| config | what | test result, wall time of \`lathe train\` (this machine: $(nproc) cores) |"
echo "| --- | --- | --- |"
printf '%s\n' "${rows[@]}"
exit $failed
