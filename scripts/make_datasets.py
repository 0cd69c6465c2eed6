"""Writes the recipes' data sets from what the machine already has (no download):
datasets/wine.csv (13 features + 'target' class 0..2), datasets/diabetes.csv (10 raw features
+ 'target' disease progression) and datasets/breast_cancer.csv (30 features + 'target' 0
malignant / 1 benign) from scikit-learn's bundled copies, and datasets/fortune_topics.csv
(text, label) from Debian's fortunes: the quotes of four topic files, 140 each, shuffled with a
fixed seed. Idempotent: existing files are kept.

  .venv/bin/python scripts/make_datasets.py [OUT_DIR]
"""
import csv
import random
import sys
from pathlib import Path

from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine


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


FORTUNES = "/usr/share/games/fortunes"
TOPICS = ("computers", "science", "politics", "food")


def write_fortunes(path: Path, per_topic=140, max_chars=300):
    if path.exists() or not Path(FORTUNES, TOPICS[0]).exists():
        return
    rows = []
    for topic in TOPICS:
        text = Path(FORTUNES, topic).read_text(encoding="utf-8", errors="replace")
        quotes = [" ".join(q.split()) for q in text.split("\n%\n")]
        quotes = [q for q in quotes if 20 <= len(q) <= max_chars][:per_topic]
        rows += [(q, topic) for q in quotes]
    random.Random(0).shuffle(rows)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    tmp.replace(path)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "datasets")
    out.mkdir(parents=True, exist_ok=True)
    write(out / "wine.csv", load_wine())
    write(out / "diabetes.csv", load_diabetes(scaled=False))
    write(out / "breast_cancer.csv", load_breast_cancer())
    write_fortunes(out / "fortune_topics.csv")


if __name__ == "__main__":
    main()
