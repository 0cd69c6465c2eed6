"""Python oracle for the estimator ONNX export tests: fits small models with the libraries
themselves (XGBoost's Python package; LIBSVM, the shared library lathe links, through ctypes),
then runs lathe's exported file in onnxruntime and compares it with the library's own
predictions on the same rows.

  estimator_onnx_oracle.py make DIR NAME:KIND:TASK[:KERNEL] ...
      KIND xgboost | random_forest | svm; TASK binary | multiclass | softmax | regression;
      KERNEL (svm) linear | polynomial | rbf | sigmoid. Writes DIR/NAME/model.json or
      DIR/NAME/model.libsvm and DIR/NAME/x.npy (float32 rows, NaN cells for the trees).
  estimator_onnx_oracle.py check DIR NAME ...
      For each NAME: loads DIR/NAME/model.* with its library, predicts x.npy, runs
      DIR/NAME/model.onnx (input `features`) on onnxruntime's CPU provider and prints one JSON
      line: "name", "rows", and for every output of the graph "mismatches" (class ids) or, for
      floats, "max_abs_diff", "max_scaled_diff" (|diff| / max(1, |reference|): onnxruntime's
      ai.onnx.ml kernels compute in float32, whose rounding grows with the value) and
      "max_abs_value" of the reference.
"""
import ctypes
import json
import os
import sys

import numpy as np

ROWS, FEATURES = 300, 6


def data(task, seed, missing):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    x[:, 5] = (rng.random(ROWS) < 0.3).astype(np.float32)  # a 0/1 column (sparse for LIBSVM)
    score = x[:, 0] + 0.8 * x[:, 1] * x[:, 2] - 0.5 * x[:, 3] + 0.3 * rng.normal(size=ROWS)
    if task == "regression":
        y = score.astype(np.float64)
    elif task == "binary":
        y = (score > 0).astype(np.float64)
    else:
        y = np.digitize(score, [-0.7, 0.7]).astype(np.float64)  # 3 classes
    if missing:
        x[rng.random(x.shape) < 0.08] = np.nan
    return x, y


# ---- XGBoost ----------------------------------------------------------------------------------

def make_xgboost(kind, task, out):
    import xgboost as xgb
    x, y = data(task, 7, missing=True)
    params = {"binary": {"objective": "binary:logistic"},
              "multiclass": {"objective": "multi:softprob", "num_class": 3},
              "softmax": {"objective": "multi:softmax", "num_class": 3},
              "regression": {"objective": "reg:squarederror"}}[task]
    params.update({"max_depth": 4, "seed": 3, "nthread": 1})
    rounds = 12
    if kind == "random_forest":
        params.update({"num_parallel_tree": 6, "subsample": 0.8, "colsample_bynode": 0.8,
                       "learning_rate": 1.0})
        rounds = 1
    else:
        params.update({"learning_rate": 0.3, "subsample": 0.9})
    booster = xgb.train(params, xgb.DMatrix(x, label=y), rounds)
    booster.save_model(os.path.join(out, "model.json"))
    np.save(os.path.join(out, "x.npy"), x)


def reference_xgboost(path, x):
    import xgboost as xgb
    booster = xgb.Booster(model_file=path)
    config = json.loads(booster.save_config())
    objective = config["learner"]["objective"]["name"]
    dm = xgb.DMatrix(x)
    if objective == "multi:softmax":  # its predict gives classes; softprob gives the probabilities
        booster.set_param({"objective": "multi:softprob"})
    p = booster.predict(dm)
    if objective == "reg:squarederror":
        return {"prediction": p.reshape(-1, 1)}
    if objective == "binary:logistic":
        probs = np.stack([1 - p, p], axis=1)
        return {"probabilities": probs, "class_id": (p > 0.5).astype(np.int64)}
    return {"probabilities": p, "class_id": np.argmax(p, axis=1)}


# ---- LIBSVM, through the shared library lathe links -------------------------------------------

class SvmNode(ctypes.Structure):
    _fields_ = [("index", ctypes.c_int), ("value", ctypes.c_double)]


class SvmProblem(ctypes.Structure):
    _fields_ = [("l", ctypes.c_int), ("y", ctypes.POINTER(ctypes.c_double)),
                ("x", ctypes.POINTER(ctypes.POINTER(SvmNode)))]


class SvmParameter(ctypes.Structure):
    _fields_ = [("svm_type", ctypes.c_int), ("kernel_type", ctypes.c_int),
                ("degree", ctypes.c_int), ("gamma", ctypes.c_double),
                ("coef0", ctypes.c_double), ("cache_size", ctypes.c_double),
                ("eps", ctypes.c_double), ("C", ctypes.c_double), ("nr_weight", ctypes.c_int),
                ("weight_label", ctypes.POINTER(ctypes.c_int)),
                ("weight", ctypes.POINTER(ctypes.c_double)), ("nu", ctypes.c_double),
                ("p", ctypes.c_double), ("shrinking", ctypes.c_int),
                ("probability", ctypes.c_int)]


def libsvm():
    lib = ctypes.CDLL("libsvm.so.3")
    lib.svm_train.restype = ctypes.c_void_p
    lib.svm_train.argtypes = [ctypes.POINTER(SvmProblem), ctypes.POINTER(SvmParameter)]
    lib.svm_save_model.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.svm_load_model.restype = ctypes.c_void_p
    lib.svm_load_model.argtypes = [ctypes.c_char_p]
    lib.svm_get_nr_class.argtypes = [ctypes.c_void_p]
    lib.svm_get_svm_type.argtypes = [ctypes.c_void_p]
    lib.svm_check_probability_model.argtypes = [ctypes.c_void_p]
    lib.svm_get_labels.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    lib.svm_predict_values.restype = ctypes.c_double
    lib.svm_predict_values.argtypes = [ctypes.c_void_p, ctypes.POINTER(SvmNode),
                                       ctypes.POINTER(ctypes.c_double)]
    lib.svm_predict_probability.restype = ctypes.c_double
    lib.svm_predict_probability.argtypes = [ctypes.c_void_p, ctypes.POINTER(SvmNode),
                                            ctypes.POINTER(ctypes.c_double)]
    printer = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(lambda s: None)
    lib.svm_set_print_string_function(printer)
    lib._quiet = printer  # keep the callback alive
    return lib


def sparse_row(row):
    """LIBSVM's nodes for one row: 1-based indices of the non-zero cells, then index -1."""
    cells = [(i + 1, float(v)) for i, v in enumerate(row) if v != 0]
    nodes = (SvmNode * (len(cells) + 1))()
    for k, (i, v) in enumerate(cells):
        nodes[k].index, nodes[k].value = i, v
    nodes[len(cells)].index = -1
    return nodes


def make_svm(task, out, kernel):
    lib = libsvm()
    x, y = data(task, 11, missing=False)
    rows = [sparse_row(r) for r in x]
    problem = SvmProblem()
    problem.l = len(rows)
    problem.y = (ctypes.c_double * len(y))(*y)
    problem.x = (ctypes.POINTER(SvmNode) * len(rows))(
        *[ctypes.cast(r, ctypes.POINTER(SvmNode)) for r in rows])
    kernels = {"linear": 0, "polynomial": 1, "rbf": 2, "sigmoid": 3}
    p = SvmParameter()
    p.svm_type = 3 if task == "regression" else 0  # epsilon_svr, c_svc
    p.kernel_type = kernels[kernel]
    p.degree, p.gamma, p.coef0 = 3, 0.2, 0.5
    if kernel == "sigmoid":
        p.gamma, p.coef0 = 0.05, -0.2
    p.cache_size, p.eps, p.C, p.nu, p.p = 100, 1e-3, 1.0, 0.5, 0.1
    p.shrinking, p.probability = 1, 0
    model = lib.svm_train(ctypes.byref(problem), ctypes.byref(p))
    path = os.path.join(out, "model.libsvm")
    if lib.svm_save_model(path.encode(), model) != 0:
        raise SystemExit(f"svm_save_model failed for {path}")
    np.save(os.path.join(out, "x.npy"), x)


def reference_svm(path, x):
    """LIBSVM's decision values, then the class scores lathe's svm gives (scikit-learn's
    SVC.decision_function): two classes [0, -d]; more, votes + conf / (3 (|conf| + 1))."""
    lib = libsvm()
    model = lib.svm_load_model(path.encode())
    if not model:
        raise SystemExit(f"LIBSVM cannot load {path}")
    k = lib.svm_get_nr_class(model)
    if lib.svm_get_svm_type(model) in (3, 4):
        dec = (ctypes.c_double * 1)()
        values = [[lib.svm_predict_values(model, sparse_row(r), dec)] for r in x]
        return {"prediction": np.array(values)}
    labels = (ctypes.c_int * k)()
    lib.svm_get_labels(model, labels)
    position = {labels[i]: i for i in range(k)}
    pairs = k * (k - 1) // 2
    file_pair = {}
    for i in range(k):
        for j in range(i + 1, k):
            file_pair[(i, j)] = len(file_pair)
    dec = (ctypes.c_double * pairs)()
    decision = np.zeros((len(x), pairs))
    for n, row in enumerate(x):
        lib.svm_predict_values(model, sparse_row(row), dec)
        p = 0
        for a in range(k):
            for b in range(a + 1, k):
                pa, pb = position[a], position[b]
                d = dec[file_pair[(min(pa, pb), max(pa, pb))]]
                decision[n, p] = d if pa < pb else -d
                p += 1
    if k == 2:
        logits = np.stack([np.zeros(len(x)), -decision[:, 0]], axis=1)
    else:
        votes, conf = np.zeros((len(x), k)), np.zeros((len(x), k))
        p = 0
        for a in range(k):
            for b in range(a + 1, k):
                d = decision[:, p]
                conf[:, a] += d
                conf[:, b] -= d
                votes[:, a] += d >= 0
                votes[:, b] += d < 0
                p += 1
        logits = votes + conf / (3 * (np.abs(conf) + 1))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"class_id": np.argmax(logits, axis=1), "probabilities": e / e.sum(axis=1, keepdims=True),
            "decision_values": decision}


# ---- check ------------------------------------------------------------------------------------

def check(folder):
    import onnx
    import onnxruntime as ort
    x = np.load(os.path.join(folder, "x.npy"))
    onnx_file = os.path.join(folder, "model.onnx")
    onnx.checker.check_model(onnx.load(onnx_file), full_check=True)
    if os.path.exists(os.path.join(folder, "model.json")):
        expected = reference_xgboost(os.path.join(folder, "model.json"), x)
    else:
        expected = reference_svm(os.path.join(folder, "model.libsvm"), x)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_file, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"features": x})))
    if sorted(names) != sorted(expected):
        raise SystemExit(f"the graph's outputs are {names}; the library gives {sorted(expected)}")
    report = {"name": os.path.basename(folder), "rows": len(x)}
    for name, want in expected.items():
        have = got[name]
        if have.shape != want.shape:
            raise SystemExit(f"{name}: onnxruntime gives shape {have.shape}, the library "
                             f"{want.shape}")
        if name == "class_id":
            report[name] = {"mismatches": int(np.sum(have != want))}
        else:
            diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
            scale = np.maximum(1.0, np.abs(want.astype(np.float64)))
            report[name] = {"max_abs_diff": float(np.max(diff)),
                            "max_scaled_diff": float(np.max(diff / scale)),
                            "max_abs_value": float(np.max(np.abs(want)))}
    print(json.dumps(report), flush=True)


def main(argv):
    if len(argv) >= 3 and argv[0] == "make":
        for case in argv[2:]:
            name, kind, task, *kernel = case.split(":")
            out = os.path.join(argv[1], name)
            os.makedirs(out, exist_ok=True)
            if kind == "svm":
                make_svm(task, out, kernel[0])
            else:
                make_xgboost(kind, task, out)
    elif len(argv) >= 3 and argv[0] == "check":
        for name in argv[2:]:
            check(os.path.join(argv[1], name))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
