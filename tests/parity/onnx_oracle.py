"""Python oracle for the ONNX export tests: runs exported files in onnxruntime and compares
with LibTorch's outputs on the same inputs.

  onnx_oracle.py MANIFEST.json

The manifest lists models: {"name", "onnx", "cases": [file.safetensors, ...]}; every case file
holds the graph inputs under their ONNX names and LibTorch's output as "expected". For each
model this checks the file with the current onnx package's full checker, runs every case on
onnxruntime's CPU provider, and prints one JSON line: {"name": ..., "diffs": [max |ort - torch|
per case], "input_shapes": [...], "output_shapes": [...]}.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file


def main(manifest_path):
    with open(manifest_path) as f:
        manifest = json.load(f)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for model in manifest["models"]:
        onnx.checker.check_model(onnx.load(model["onnx"]), full_check=True)
        session = ort.InferenceSession(model["onnx"], options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        diffs, in_shapes, out_shapes = [], [], []
        for case in model["cases"]:
            tensors = load_file(case)
            feeds = {n: tensors[n] for n in names}
            (out,) = session.run(None, feeds)
            expected = tensors["expected"]
            if out.shape != expected.shape:
                raise SystemExit(f"{model['name']}: onnxruntime gives shape {out.shape}, "
                                 f"LibTorch {expected.shape} ({case})")
            diffs.append(float(np.max(np.abs(out.astype(np.float64) - expected))))
            in_shapes.append([list(feeds[n].shape) for n in names])
            out_shapes.append(list(out.shape))
        print(json.dumps({"name": model["name"], "diffs": diffs, "input_shapes": in_shapes,
                          "output_shapes": out_shapes}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
