"""Python oracle for the tabular tests: writes CSVs from scikit-learn's bundled data sets (with
missing cells and a categorical column added) and the features scikit-learn's preprocessing gives.

  tabular_oracle.py OUT_DIR
    -> OUT_DIR/wine.csv          wine (178 rows), holes in 4 columns, a categorical 'grade'
       OUT_DIR/wine_expected.csv the features for every row, fitted on rows 0..139
       OUT_DIR/diabetes.csv      diabetes (442 rows) with a header, 'sex' as a category
       OUT_DIR/diabetes_expected.csv  min-max features, 'sex' ordinal-encoded, fitted on rows 0..352
       OUT_DIR/cancer.csv        breast cancer (569 rows), target 'malignant' / 'benign'
       OUT_DIR/cancer_expected.csv    z-score clipping (k = 3) then standardisation, rows 0..454
The C++ test fits the same steps on the same rows and compares (tolerance 1e-5).
"""
import csv
import sys
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler


class Clip(BaseEstimator, TransformerMixin):
    """Outlier clipping fitted on the training rows: z-score (mean ± k·std) or IQR."""

    def __init__(self, kind, k):
        self.kind, self.k = kind, k

    def fit(self, x, y=None):
        x = np.asarray(x, dtype=float)
        if self.kind == "zscore":
            m, s = x.mean(axis=0), x.std(axis=0)
            self.lo_, self.hi_ = m - self.k * s, m + self.k * s
        else:
            q1, q3 = np.quantile(x, 0.25, axis=0), np.quantile(x, 0.75, axis=0)
            self.lo_, self.hi_ = q1 - self.k * (q3 - q1), q3 + self.k * (q3 - q1)
        return self

    def transform(self, x):
        return np.clip(np.asarray(x, dtype=float), self.lo_, self.hi_)


def write_csv(file: Path, header, columns):
    """columns: one list per column; None and NaN are written as empty cells."""
    def cell(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)
    with open(file, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in zip(*columns):
            w.writerow([cell(v) for v in row])


def fit_transform(columns, steps, train_rows):
    """columns: list of 1-D arrays (object or float); steps: one transformer per column."""
    x = np.empty((len(columns[0]), len(columns)), dtype=object)
    for j, c in enumerate(columns):
        x[:, j] = c
    ct = ColumnTransformer([(str(j), s, [j]) for j, s in enumerate(steps)])
    ct.fit(x[:train_rows])
    return ct.transform(x).astype(float)


def wine(out: Path):
    d = load_wine()
    names = list(d.feature_names)
    cols = {n: d.data[:, j].astype(float).copy() for j, n in enumerate(names)}
    rng = np.random.default_rng(0)
    for col in ["alcohol", "malic_acid", "ash", "hue"]:
        cols[col][rng.random(len(d.target)) < 0.1] = np.nan
    grade = np.where(cols["proline"] > 1000, "high",
                     np.where(cols["proline"] > 600, "mid", "low")).astype(object)
    grade[rng.random(len(d.target)) < 0.08] = None
    names.insert(5, "grade")
    cols["grade"] = grade
    target = [f"class_{t}" for t in d.target]
    write_csv(out / "wine.csv", names + ["target"], [cols[n] for n in names] + [target])

    # The C++ spec: all columns standard-scaled unless listed here (tests/unit/test_data_tabular.cpp).
    special = {
        "alcohol": lambda: make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()),
        "malic_acid": lambda: make_pipeline(SimpleImputer(strategy="median"), MinMaxScaler()),
        "ash": lambda: make_pipeline(SimpleImputer(strategy="most_frequent"), StandardScaler()),
        "hue": lambda: make_pipeline(SimpleImputer(strategy="constant", fill_value=1.0),
                                     Clip("iqr", 1.5)),
        "grade": lambda: make_pipeline(
            SimpleImputer(strategy="most_frequent", missing_values=None),
            OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        "proline": lambda: make_pipeline(Clip("zscore", 2.0), StandardScaler()),
        "magnesium": lambda: "passthrough",
    }
    steps = [special.get(n, StandardScaler)() for n in names]
    columns = [cols[n] if n == "grade" else cols[n].astype(float) for n in names]
    np.savetxt(out / "wine_expected.csv", fit_transform(columns, steps, 140), delimiter=",",
               fmt="%.17g")


def diabetes(out: Path):
    d = load_diabetes(scaled=False)
    names = list(d.feature_names)
    cols = [d.data[:, j].astype(float) for j in range(len(names))]
    sex = names.index("sex")
    cols[sex] = np.where(cols[sex] == 1, "female", "male").astype(object)
    write_csv(out / "diabetes.csv", names + ["target"], cols + [d.target.astype(float)])
    steps = [OrdinalEncoder() if j == sex else MinMaxScaler() for j in range(len(names))]
    np.savetxt(out / "diabetes_expected.csv", fit_transform(cols, steps, 353), delimiter=",",
               fmt="%.17g")


def cancer(out: Path):
    d = load_breast_cancer()
    cols = [d.data[:, j].astype(float) for j in range(d.data.shape[1])]
    write_csv(out / "cancer.csv", list(d.feature_names) + ["diagnosis"],
              cols + [[d.target_names[t] for t in d.target]])
    steps = [make_pipeline(Clip("zscore", 3.0), StandardScaler()) for _ in cols]
    np.savetxt(out / "cancer_expected.csv", fit_transform(cols, steps, 455), delimiter=",",
               fmt="%.17g")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    wine(out)
    diabetes(out)
    cancer(out)
    print("ok")
