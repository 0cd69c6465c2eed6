"""Oracle for the run report's per-class scores: scikit-learn's precision_recall_fscore_support
(zero_division=0) and confusion_matrix over a run's test_predictions.json (y_true, y_pred),
printed as JSON for tests/unit/test_runs.cpp to compare with lathe::run::class_report."""
import json
import sys

from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def main(path):
    with open(path) as f:
        preds = json.load(f)
    labels = list(range(max(len(preds["classes"]), max(preds["y_true"] + preds["y_pred"]) + 1)))
    p, r, f1, support = precision_recall_fscore_support(
        preds["y_true"], preds["y_pred"], labels=labels, zero_division=0)
    cm = confusion_matrix(preds["y_true"], preds["y_pred"], labels=labels)
    print(json.dumps({"precision": p.tolist(), "recall": r.tolist(), "f1": f1.tolist(),
                      "support": support.tolist(), "confusion": cm.tolist()}))


if __name__ == "__main__":
    main(sys.argv[1])
