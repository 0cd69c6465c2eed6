"""Python oracle for `lathe export --int8`: scores an fp32 and an int8 ONNX file of the same run in
onnxruntime on the run's test split (written by `lathe eval RUN --save-inputs FILE`).

  int8_oracle.py FP32.onnx INT8.onnx TEST.safetensors

Prints one JSON object: "fp32" and "int8" accuracy on the test records (argmax of the output
against "targets"), "delta_points" (int8 - fp32, in percentage points), the files' sizes in bytes
and their ratio, the int8 graph's operator counts ("ops"), its "quantization" metadata entry, and
"agreement" (the fraction of records whose predicted class is the same in both files).
A model with inputs (input_ids, attention_mask) gets the mask ids != 0 ([PAD] is id 0 in the BERT
vocabularies lathe reads, and the mask lathe's BERT computes itself when given none).
"""
import collections
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file


def predict(path, inputs, batch=256):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    classes = []
    for start in range(0, len(inputs), batch):
        x = inputs[start:start + batch]
        feeds = {names[0]: x}
        if len(names) == 2:
            feeds[names[1]] = (x != 0).astype(np.int64)
        (out,) = session.run(None, feeds)
        classes.append(out.argmax(axis=-1))
    return np.concatenate(classes)


def main(fp32, int8, split):
    tensors = load_file(split)
    inputs, targets = tensors["inputs"], tensors["targets"].astype(np.int64)
    a, b = predict(fp32, inputs), predict(int8, inputs)
    acc_a, acc_b = float((a == targets).mean()), float((b == targets).mean())
    proto = onnx.load(int8)
    onnx.checker.check_model(proto, full_check=True)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    meta = {p.key: p.value for p in proto.metadata_props}
    sizes = os.path.getsize(fp32), os.path.getsize(int8)
    print(json.dumps({
        "records": int(len(targets)), "fp32": acc_a, "int8": acc_b,
        "delta_points": 100.0 * (acc_b - acc_a), "agreement": float((a == b).mean()),
        "fp32_bytes": sizes[0], "int8_bytes": sizes[1], "ratio": sizes[1] / sizes[0],
        "ops": dict(ops), "quantization": json.loads(meta.get("quantization", "null")),
    }))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
