"""Oracle for lathe's MLflow tracking: reads a run back with MLflow's own Python client
(mlflow.tracking.MlflowClient) and checks it against the lathe run folder it was logged from.

  mlflow_oracle.py wait URI SECONDS
      waits until the tracking server at URI answers /health (exit 1 after SECONDS)
  mlflow_oracle.py check URI RUN_DIR EXPERIMENT RUN_NAME ARTIFACT...
      the MLflow run recorded in RUN_DIR/run.json: FINISHED, in EXPERIMENT, named RUN_NAME; its
      params are RUN_DIR/config.yaml flattened to dotted keys (scalars exactly); its metric
      histories (values and steps) are metrics.jsonl's rows; test/* are test_metrics.json; its
      tags name the model and task; its artifacts are exactly ARTIFACT... and config.yaml's
      bytes come back unchanged. Prints a JSON summary; any mismatch exits non-zero.
"""
import json
import math
import os
import sys
import tempfile
import time
import urllib.request

import yaml


def wait(uri, seconds):
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                if r.status == 200:
                    print("up")
                    return
        except OSError:
            pass
        time.sleep(0.25)
    sys.exit(f"no answer from {uri}/health within {seconds} s")


def flatten(node, prefix, out):
    if isinstance(node, dict):
        if not node and prefix:
            out[prefix] = "{}"
        for k, v in node.items():
            flatten(v, f"{prefix}.{k}" if prefix else k, out)
    elif isinstance(node, list):
        out[prefix] = None  # lists: the key must be there (yaml-cpp's flow text is not checked)
    else:
        out[prefix] = node


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def check(uri, run_dir, experiment, run_name, artifacts):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    with open(os.path.join(run_dir, "run.json")) as f:
        record = json.load(f)["mlflow"]
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED", run.info.status
    assert run.info.run_name == run_name, run.info.run_name
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None and run.info.experiment_id == exp.experiment_id, (experiment, run.info)

    with open(os.path.join(run_dir, "config.yaml")) as f:
        config_text = f.read()
    expected = {}
    flatten(yaml.load(config_text, Loader=yaml.BaseLoader), "", expected)  # scalars as text
    params = run.data.params
    assert set(params) == set(expected), sorted(set(params) ^ set(expected))
    for k, v in expected.items():
        if v is not None:
            assert params[k] == v, (k, params[k], v)

    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    checked = {}
    for key, kind in (("train/loss", "step"), ("val/accuracy", "val"), ("lr/group0", "lr"),
                      ("train_epoch/loss", "epoch")):
        want = [(r["step"], r[key]) for r in rows if r["kind"] == kind and r.get(key) is not None]
        got = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        got.sort(key=lambda p: p[0])
        assert len(want) > 0, key
        assert len(got) == len(want), (key, len(got), len(want))
        for (s1, v1), (s2, v2) in zip(got, want):
            assert s1 == s2 and close(v1, v2), (key, s1, v1, s2, v2)
        checked[key] = len(got)
    with open(os.path.join(run_dir, "test_metrics.json")) as f:
        test = json.load(f)
    for k, v in test.items():
        assert close(run.data.metrics["test/" + k], v), (k, run.data.metrics.get("test/" + k), v)

    tags = run.data.tags
    assert tags["lathe.model"] == "mlp", tags
    assert tags["lathe.task"] == "classification", tags
    assert tags["mlflow.runName"] == run_name, tags
    assert tags["mlflow.source.type"] == "LOCAL", tags

    names = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert names == sorted(artifacts), (names, sorted(artifacts))
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run.info.run_id, "config.yaml", tmp)
        with open(local) as f:
            assert f.read() == config_text, "config.yaml came back changed"
    print(json.dumps({"ok": True, "params": len(params), "histories": checked,
                      "test_metrics": len(test), "artifacts": names}))


if __name__ == "__main__":
    if sys.argv[1] == "wait":
        wait(sys.argv[2], sys.argv[3])
    else:
        check(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:])
