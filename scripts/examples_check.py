"""Checks what the examples printed and wrote (scripts/examples.sh runs them, then this).

Each example prints "fact: key=value" lines into OUT/<name>.txt and writes its files under
OUT/<name>/. Every check that fails is listed; the exit status is 1 when any did.

    python scripts/examples_check.py OUT
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file
from sklearn.metrics import recall_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# Tolerances: ONNX Runtime against LibTorch on the same float32 inputs (different kernels);
# facts are printed with 6 decimals.
ONNX_ATOL = 1e-4
PRINTED = 2e-6

failures = []


def check(ok, what):
    print(("  ok   " if ok else "  FAIL ") + what)
    if not ok:
        failures.append(what)


def facts(out, name):
    values = {}
    for line in (out / f"{name}.txt").read_text().splitlines():
        if line.startswith("fact: "):
            key, _, value = line[len("fact: "):].partition("=")
            values[key] = value
    return values


def jsonl(file):
    return [json.loads(line) for line in Path(file).read_text().splitlines() if line.strip()]


def onnx_matches(onnx_file, probe_file, input_name):
    """The ONNX file, run by onnxruntime on the probe input, against the module's output."""
    probe = load_file(probe_file)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    check([i.name for i in inputs] == [input_name], f"{onnx_file}: input is '{input_name}'")
    check(inputs[0].shape[0] == "batch", f"{onnx_file}: the batch axis is dynamic")
    got = session.run(None, {input_name: probe["input"]})[0]
    diff = float(np.abs(got - probe["output"]).max())
    check(got.shape == probe["output"].shape and diff <= ONNX_ATOL,
          f"{onnx_file}: onnxruntime's output matches the module's (max |diff| {diff:.2e} "
          f"<= {ONNX_ATOL}, batch {probe['input'].shape[0]})")
    return session


def custom_model(out):
    print("custom_model: own CNN + Dataset, Trainer, checkpoint, resume, ONNX")
    f = facts(out, "custom_model")
    first, last = float(f["first_loss"]), float(f["last_loss"])
    check(last < 0.5 * first, f"the loss falls: first epoch {first:.4f} -> last {last:.4f}")
    before, resumed = int(f["steps_before_resume"]), int(f["resumed_step"])
    check(before > 0 and resumed == before,
          f"the resumed Trainer starts at the checkpoint's step ({resumed} == {before})")
    final = int(f["final_step"])
    check(int(f["resumed_epochs"]) == 2 and final == 2 * before,
          f"it trains epochs 3 and 4 only, ending at step {final} == 2 x {before}")
    epoch_steps = [row["step"] for row in jsonl(out / "custom_model/metrics.jsonl")
                   if row["kind"] == "epoch"]
    per_epoch = before // 2
    check(epoch_steps == [per_epoch * k for k in (1, 2, 3, 4)],
          f"metrics.jsonl's epoch rows continue across the resume: steps {epoch_steps}")
    check(float(f["val_accuracy"]) >= 0.9, f"validation accuracy {f['val_accuracy']} >= 0.9")
    onnx_matches(f["onnx"].split(" ")[0], f["probe"], "images")


def register_model(out):
    print("register_model: a user model by name, trained from YAML, exported by export_run")
    one, ddp = facts(out, "register_model"), facts(out, "register_model_ddp")
    for f, world in ((one, 1), (ddp, 2)):
        check(int(f["world_size"]) == world, f"trained by {world} process(es)")
        first, last = float(f["first_loss"]), float(f["last_loss"])
        check(last < 0.5 * first, f"the loss falls: first epoch {first:.4f} -> last {last:.4f}")
        check(float(f["test_accuracy"]) >= 0.9, f"test accuracy {f['test_accuracy']} >= 0.9")
        check(f["in_features"] == "4" and f["num_classes"] == "3",
              "in_features 4 and num_classes 3 came from the data (the config says neither)")
        session = onnx_matches(f["onnx"], f["probe"], "features")
        meta = session.get_modelmeta().custom_metadata_map
        check(meta.get("model") == "blob_net", "the ONNX metadata names the registered model")
    for key in ("first_loss", "last_loss"):
        a, b = float(one[key]), float(ddp[key])
        check(abs(a - b) <= 1e-4, f"{key}: 2 ranks train as one process does ({b} vs {a})")
    error = one["misspelt_option_error"]
    check("model.hiden" in error and "did you mean 'hidden'" in error,
          f"a misspelt option of the user model is an error naming it: {error}")


def custom_metric(out):
    print("custom_metric: per-class recall metric, worst-class callback, TensorBoard")
    f = facts(out, "custom_metric")
    first, last = float(f["first_loss"]), float(f["last_loss"])
    check(last < 0.8 * first, f"the loss falls: first epoch {first:.4f} -> last {last:.4f}")
    pred = load_file(f["predictions"])
    expected = recall_score(pred["targets"], pred["logits"].argmax(1), average=None,
                            zero_division=0)
    for k, want in enumerate(expected):
        got = float(f[f"recall_{k}"])
        check(abs(got - want) <= PRINTED, f"recall_{k} {got} == scikit-learn's {want:.6f}")
    rows = jsonl(out / "custom_metric/metrics.jsonl")
    val_rows = [r for r in rows if r["kind"] == "val" and "val/recall_0" in r]
    worst_rows = [r for r in rows if r["kind"] == "val" and "val/worst_recall" in r]
    check(len(val_rows) == 6 and len(worst_rows) == 6,
          f"6 validations logged the user metric and the callback's value "
          f"({len(val_rows)}, {len(worst_rows)})")
    for v, w in zip(val_rows, worst_rows):
        recalls = [v[f"val/recall_{k}"] for k in range(3)]
        check(w["step"] == v["step"] and math.isclose(w["val/worst_recall"], min(recalls))
              and w["val/worst_class"] == recalls.index(min(recalls)),
              f"step {v['step']}: worst class {w['val/worst_class']:.0f} at recall "
              f"{w['val/worst_recall']:.4f}")
    best = max(r["val/recall_2"] for r in val_rows)
    check(abs(float(f["early_stopping_best"]) - best) <= PRINTED,
          f"early stopping took the user metric's direction (higher is better): best "
          f"{f['early_stopping_best']} == max over validations {best:.6f}")
    events = EventAccumulator(f["tensorboard"])
    events.Reload()
    tags = set(events.Tags()["scalars"])
    want = {"train/loss", "val/recall_0", "val/recall_1", "val/recall_2", "val/worst_recall"}
    check(want <= tags, f"TensorBoard has {sorted(want)} (it has {sorted(tags)})")
    if "val/worst_recall" in tags:
        tb = [e.value for e in events.Scalars("val/worst_recall")]
        check(np.allclose(tb, [w["val/worst_recall"] for w in worst_rows], atol=1e-6),
              "TensorBoard's val/worst_recall equals metrics.jsonl's")


def main():
    out = Path(sys.argv[1])
    for example in (custom_model, register_model, custom_metric):
        try:
            example(out)
        except Exception as e:  # a missing fact or file is a failure of that example
            check(False, f"{example.__name__}: {type(e).__name__}: {e}")
    if failures:
        print(f"examples_check: {len(failures)} check(s) FAILED:", *failures, sep="\n  ")
        sys.exit(1)
    print("examples_check: all checks passed")


if __name__ == "__main__":
    main()
