"""Writes the CSV recipes' data sets from scikit-learn's bundled copies (no download):
datasets/wine.csv (13 features + 'target' class 0..2) and datasets/diabetes.csv (10 raw features
+ 'target' disease progression). Idempotent: existing files are kept.

  .venv/bin/python scripts/make_datasets.py [OUT_DIR]
"""
import csv
import sys
from pathlib import Path

from sklearn.datasets import load_diabetes, load_wine


def write(path: Path, bunch):
    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(bunch.feature_names) + ["target"])
        for row, y in zip(bunch.data, bunch.target):
            w.writerow([repr(float(v)) for v in row] + [y])
    tmp.replace(path)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "datasets")
    out.mkdir(parents=True, exist_ok=True)
    write(out / "wine.csv", load_wine())
    write(out / "diabetes.csv", load_diabetes(scaled=False))


if __name__ == "__main__":
    main()
