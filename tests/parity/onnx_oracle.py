"""Python oracle for the ONNX export tests: runs exported files in onnxruntime and compares
with LibTorch's outputs on the same inputs.

  onnx_oracle.py MANIFEST.json
  onnx_oracle.py --describe FILE.onnx [OTHER.onnx]

The manifest lists models: {"name", "onnx", "cases": [file.safetensors, ...]}; every case file
holds the graph inputs under their ONNX names and LibTorch's output as "expected". For each
model this checks the file with the current onnx package's full checker, runs every case on
onnxruntime's CPU provider, and prints one JSON line: {"name": ..., "diffs": [max |ort - torch|
per case], "input_shapes": [...], "output_shapes": [...], "unused_initializers": the number of
initializers no node reads (onnxruntime warns "Removing initializer ..." for each)}.

--describe prints one JSON object about FILE: producer, IR version, opsets, metadata_props, the
inputs and outputs with their dims (numbers or symbols), and with OTHER the max |FILE - OTHER| of
the two models' first outputs on the same random input (batch 3; ids where inputs are int64).
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
        proto = onnx.load(model["onnx"])
        onnx.checker.check_model(proto, full_check=True)
        read = {name for node in proto.graph.node for name in node.input}
        unused = sum(1 for init in proto.graph.initializer if init.name not in read)
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
                          "output_shapes": out_shapes, "unused_initializers": unused}), flush=True)


def _dims(value_info):
    return [d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in value_info.type.tensor_type.shape.dim]


def describe(path, other=None):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    info = {
        "producer": [model.producer_name, model.producer_version],
        "ir_version": model.ir_version,
        "opsets": {o.domain: o.version for o in model.opset_import},
        "metadata": {p.key: p.value for p in model.metadata_props},
        "inputs": [{"name": i.name, "dims": _dims(i)} for i in model.graph.input],
        "outputs": [{"name": o.name, "dims": _dims(o)} for o in model.graph.output],
    }
    if other:
        rng = np.random.default_rng(0)
        feeds = {}
        for i in ort.InferenceSession(path).get_inputs():
            shape = [3 if isinstance(d, str) or d is None else d for d in i.shape]
            if i.type == "tensor(int64)":
                feeds[i.name] = rng.integers(0, 2, size=shape).astype(np.int64)
            else:
                feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        a = ort.InferenceSession(path).run(None, feeds)[0]
        b = ort.InferenceSession(other).run(None, feeds)[0]
        info["max_diff"] = float(np.max(np.abs(a.astype(np.float64) - b)))
    print(json.dumps(info))


if __name__ == "__main__":
    if sys.argv[1] == "--describe":
        describe(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        main(sys.argv[1])
