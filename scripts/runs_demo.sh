#!/usr/bin/env bash
# Trains a handful of short recipe runs into runs/demo_runs/ — the wine and diabetes recipes, wine
# at another learning rate, wine with early stopping, and a wine run killed with SIGKILL — then
# prints `lathe runs` over them, `lathe runs --diff` of the two wine learning rates, and writes
# one run's report. The README's "Finding and comparing runs" section shows this script's output.
#
#   scripts/runs_demo.sh
#
# LATHE: the lathe binary (default build/release/lathe: `cmake --preset release && cmake
# --build --preset release`, or any build's, e.g. LATHE=build/ci/lathe).
set -euo pipefail
cd "$(dirname "$0")/.."
lathe=${LATHE:-build/release/lathe}
[ -x "$lathe" ] || { echo "no lathe binary at $lathe: build it or set LATHE" >&2; exit 1; }
out=runs/demo_runs
rm -rf "$out"
mkdir -p "$out"
# One thread each: on a shared 2-core machine more only wait for each other.
common=(run.dir="$out" run.threads=1 trainer.progress=none trainer.tensorboard=false)

"$lathe" train configs/wine_mlp.yaml "${common[@]}" >/dev/null 2>&1
"$lathe" train configs/wine_mlp.yaml "${common[@]}" run.name=wine_lr1e-3 optim.lr=0.001 >/dev/null 2>&1
"$lathe" train configs/diabetes_regression.yaml "${common[@]}" >/dev/null 2>&1
"$lathe" train configs/wine_mlp.yaml "${common[@]}" run.name=wine_early_stop trainer.max_epochs=200 \
  trainer.early_stopping.monitor=val/loss trainer.early_stopping.patience=3 >/dev/null 2>&1
# A long run killed mid-way: SIGKILL once its second checkpoint is there.
"$lathe" train configs/wine_mlp.yaml "${common[@]}" run.name=wine_killed trainer.max_epochs=5000 \
  >/dev/null 2>&1 &
pid=$!
until [ "$(ls -d "$out"/wine_killed/checkpoints/step-* 2>/dev/null | wc -l)" -ge 2 ]; do sleep 0.2; done
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true

echo "\$ lathe runs $out"
"$lathe" runs "$out"
echo
echo "\$ lathe runs $out --filter task=classification --sort test.accuracy"
"$lathe" runs "$out" --filter task=classification --sort test.accuracy
echo
echo "\$ lathe runs --diff $out/wine_mlp $out/wine_lr1e-3"
"$lathe" runs --diff "$out/wine_mlp" "$out/wine_lr1e-3"
echo
echo "\$ lathe report $out/wine_mlp -o $out/wine_mlp.html"
"$lathe" report "$out/wine_mlp" -o "$out/wine_mlp.html" 2>&1
