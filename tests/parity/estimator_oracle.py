"""Python oracle for the estimator tests (xgboost, random_forest, svm): scikit-learn's bundled
tables in, Python xgboost 1.7.4 / scikit-learn's SVC, SVR and RandomForest as the references.

  estimator_oracle.py data DIR
    -> DIR/{wine,cancer,diabetes}_{x_train,y_train,x_test,y_test}.csv: standardised features
       (fitted on the training rows), a fixed seeded 75/25 split (stratified for the classes);
       DIR/{wine,cancer,diabetes}.csv the raw table with a header and 'target' (for lathe train)
  estimator_oracle.py xgb DIR NAME
    reads DIR/NAME_params.json (lathe's model options and task), the data set's CSVs,
    DIR/NAME_lathe.csv (lathe's predict on x_test: logits or values) and DIR/NAME_model.json
    (lathe's saved booster); trains Python's xgboost with the same parameters and checks
    (1) its margins equal lathe's, (2) the booster lathe saved, loaded here, predicts the same,
    both within 1e-6; prints the largest differences.
  estimator_oracle.py svm DIR NAME
    reads DIR/NAME_params.json, DIR/NAME_lathe_dec.csv (lathe's one-vs-one decision values or
    SVR values) and DIR/NAME_lathe.csv (lathe's logits); fits sklearn's SVC / SVR and checks the
    decision values (decision_function_shape='ovo'), the one-vs-rest values and gamma within 1e-6.
  estimator_oracle.py forest DIR NAME
    reads DIR/NAME_params.json ({"data", "seeds", "lathe": [metric per seed], ...}); fits
    sklearn's RandomForestClassifier / Regressor (n_estimators, max_depth) on the same split with
    each seed and checks that lathe's mean test metric (accuracy or r2) is within "tolerance" of
    sklearn's mean; prints both.
"""
import json
import sys
from pathlib import Path

import numpy as np

TOL = 1e-6


def load(name):
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
    return {"wine": load_wine, "cancer": load_breast_cancer, "diabetes": load_diabetes}[name]()


def make_data(out: Path):
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    for name in ("wine", "cancer", "diabetes"):
        bunch = load(name)
        x, y = bunch.data, bunch.target
        classify = name != "diabetes"
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0,
                                              stratify=y if classify else None)
        scaler = StandardScaler().fit(xtr)
        xtr, xte = scaler.transform(xtr).astype(np.float32), scaler.transform(xte).astype(np.float32)
        for part, arr in (("x_train", xtr), ("x_test", xte)):
            np.savetxt(out / f"{name}_{part}.csv", arr, fmt="%.9g", delimiter=",")
        for part, arr in (("y_train", ytr), ("y_test", yte)):
            np.savetxt(out / f"{name}_{part}.csv", arr, fmt="%d" if classify else "%.9g")
        header = [f.replace(" ", "_") for f in bunch.feature_names] + ["target"]
        with open(out / f"{name}.csv", "w") as f:
            f.write(",".join(header) + "\n")
            for row, t in zip(x, y):
                f.write(",".join(repr(float(v)) for v in row) + f",{t}\n")


def read(d: Path, data, part):
    a = np.loadtxt(d / f"{data}_{part}.csv", delimiter=",", dtype=np.float64)
    return a.astype(np.float32) if part.startswith("x_") else a


def xgb_check(d: Path, name):
    import xgboost as xgb
    p = json.loads((d / f"{name}_params.json").read_text())
    data = p["data"]
    xtr, ytr, xte = read(d, data, "x_train"), read(d, data, "y_train"), read(d, data, "x_test")
    k = p.get("num_classes", 0)
    forest = p.get("mode", "gbtree") == "forest"
    params = {
        "booster": "gbtree", "verbosity": 0, "seed": p["seed"], "seed_per_iteration": 1,
        "eta": 1.0 if forest else p["learning_rate"], "max_depth": p["max_depth"],
        "min_child_weight": p.get("min_child_weight", 1.0), "subsample": p["subsample"],
        "colsample_bytree": p["colsample_bytree"], "colsample_bynode": p["colsample_bynode"],
        "lambda": p["reg_lambda"], "alpha": p.get("reg_alpha", 0.0), "gamma": p.get("gamma", 0.0),
        "max_bin": p.get("max_bin", 256), "tree_method": p.get("tree_method", "hist"),
        "num_parallel_tree": p["n_estimators"] if forest else 1,
    }
    if p["kind"] == "classification":
        params["objective"] = "multi:softprob" if k > 2 else "binary:logistic"
        if k > 2:
            params["num_class"] = k
    else:
        params["objective"] = "reg:squarederror"
    weight = None
    if p.get("class_weights"):
        weight = np.asarray(p["class_weights"])[ytr.astype(int)]
    dtrain = xgb.DMatrix(xtr, label=ytr, weight=weight)
    booster = xgb.train(params, dtrain, num_boost_round=1 if forest else p["n_estimators"])
    dtest = xgb.DMatrix(xte)
    ours = booster.predict(dtest, output_margin=True)
    theirs = np.loadtxt(d / f"{name}_lathe.csv", delimiter=",", ndmin=2)
    if params["objective"] == "binary:logistic":
        theirs = theirs[:, 1] - theirs[:, 0]  # lathe's logits [0, margin]
    theirs = theirs.reshape(ours.shape)
    loaded = xgb.Booster(model_file=str(d / f"{name}_model.json"))
    again = loaded.predict(dtest, output_margin=True).reshape(ours.shape)
    train_diff = float(np.max(np.abs(ours - theirs)))
    load_diff = float(np.max(np.abs(again - theirs)))
    print(f"xgboost {xgb.__version__} {name}: trained here vs lathe max |diff| {train_diff:.3g}; "
          f"lathe's model.json loaded here vs lathe {load_diff:.3g}")
    if train_diff > TOL or load_diff > TOL:
        sys.exit(f"{name}: differences above {TOL}")


def svm_check(d: Path, name):
    from sklearn.svm import SVC, SVR
    p = json.loads((d / f"{name}_params.json").read_text())
    data = p["data"]
    xtr, ytr, xte = (read(d, data, s).astype(np.float64) for s in ("x_train", "y_train", "x_test"))
    common = dict(kernel=p["kernel"], C=p["C"], gamma=p["gamma"], degree=p["degree"],
                  coef0=p["coef0"], tol=p["tol"], shrinking=p["shrinking"])
    dec = np.loadtxt(d / f"{name}_lathe_dec.csv", delimiter=",", ndmin=2)
    logits = np.loadtxt(d / f"{name}_lathe.csv", delimiter=",", ndmin=2)
    if p["kind"] == "regression":
        model = SVR(epsilon=p["epsilon"], **common).fit(xtr, ytr)
        ref = model.predict(xte)
        # lathe's predict gives float32: its values are compared relative to their size
        diffs = {"values": np.max(np.abs(ref - dec[:, 0])),
                 "predict (relative)": np.max(np.abs(ref - logits[:, 0]) / np.maximum(1, np.abs(ref)))}
    else:
        cw = {i: w for i, w in enumerate(p["class_weights"])} if p.get("class_weights") else None
        ovo = SVC(decision_function_shape="ovo", class_weight=cw, **common).fit(xtr, ytr.astype(int))
        ref = ovo.decision_function(xte).reshape(len(xte), -1)
        if ref.shape[1] == 1:  # binary: sklearn returns -dec (positive: class 1)
            diffs = {"ovo": np.max(np.abs(-ref[:, 0] - dec[:, 0])),
                     "decision": np.max(np.abs(ref[:, 0] - (logits[:, 1] - logits[:, 0])))}
        else:
            ovr = SVC(decision_function_shape="ovr", break_ties=True, class_weight=cw,
                      **common).fit(xtr, ytr.astype(int))
            diffs = {"ovo": np.max(np.abs(ref - dec)),
                     "ovr": np.max(np.abs(ovr.decision_function(xte) - logits)),
                     "class": float(np.sum(ovr.predict(xte) != logits.argmax(1)))}
        model = ovo
    diffs["gamma"] = abs(model._gamma - p["lathe_gamma"]) if p["kernel"] != "linear" else 0.0
    print(f"svm {name}: max |diff| " + ", ".join(f"{k} {float(v):.3g}" for k, v in diffs.items()))
    if any(float(v) > TOL for v in diffs.values()):
        sys.exit(f"{name}: differences above {TOL}")


def forest_check(d: Path, name):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.metrics import accuracy_score, r2_score
    p = json.loads((d / f"{name}_params.json").read_text())
    data = p["data"]
    xtr, ytr, xte, yte = (read(d, data, s) for s in ("x_train", "y_train", "x_test", "y_test"))
    scores = []
    for seed in p["seeds"]:
        if p["kind"] == "classification":
            m = RandomForestClassifier(n_estimators=p["n_estimators"], random_state=seed)
            scores.append(accuracy_score(yte, m.fit(xtr, ytr.astype(int)).predict(xte)))
        else:
            m = RandomForestRegressor(n_estimators=p["n_estimators"], random_state=seed)
            scores.append(r2_score(yte, m.fit(xtr, ytr).predict(xte)))
    ref, ours = float(np.mean(scores)), float(np.mean(p["lathe"]))
    print(f"forest {name}: lathe mean {ours:.4f}, scikit-learn RandomForest mean {ref:.4f} over "
          f"seeds {p['seeds']} (tolerance {p['tolerance']})")
    if abs(ours - ref) > p["tolerance"]:
        sys.exit(f"{name}: lathe's forest {ours:.4f} is not within {p['tolerance']} of {ref:.4f}")


if __name__ == "__main__":
    cmd, d = sys.argv[1], Path(sys.argv[2])
    if cmd == "data":
        make_data(d)
    else:
        {"xgb": xgb_check, "svm": svm_check, "forest": forest_check}[cmd](d, sys.argv[3])
