"""Python oracle for `lathe export --preprocess`: runs the exported file in onnxruntime on raw
records, read as a user reads them (the README's snippet), and writes what the graph answers.

  preprocess_oracle.py FILE.onnx OUT.json --csv RECORDS.csv
  preprocess_oracle.py FILE.onnx OUT.json --images IMAGE.png...

CSV: pandas reads the file; every graph input is the column of its name, float32 [N, 1] (float64
for a double input; empty cells and lathe's missing-value tokens as NaN) or, for string inputs, the cell text with spaces
stripped ("" where the cell is missing) [N, 1]. Images: PIL decodes each file to uint8 [H, W, C],
stacked to [N, H, W, C]. OUT.json holds {"inputs": [{name, type, shape}], "opsets": {...},
"outputs": {name: values as lists}} after the onnx package's full checker passed.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

# lathe's CsvOptions::missing: the cells it reads as missing values.
MISSING = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "?"]


def csv_feeds(session, path):
    import pandas as pd

    text = {i.name: str for i in session.get_inputs() if i.type == "tensor(string)"}
    table = pd.read_csv(path, dtype=text, keep_default_na=False, na_values=MISSING)
    feeds = {}
    for i in session.get_inputs():
        col = table[i.name]
        number = np.float64 if i.type == "tensor(double)" else np.float32
        col = col.fillna("").str.strip() if i.name in text else col.astype(number)
        feeds[i.name] = col.to_numpy().reshape(-1, 1)
    return feeds


def image_feeds(paths):
    from PIL import Image

    images = []
    for p in paths:
        pixels = np.asarray(Image.open(p))
        images.append(pixels[:, :, None] if pixels.ndim == 2 else pixels)  # (H, W, C)
    return {"pixels": np.stack(images).astype(np.uint8)}  # (N, H, W, C)


def main(model_path, out_path, kind, records):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    feeds = csv_feeds(session, records[0]) if kind == "--csv" else image_feeds(records)
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, feeds)
    result = {
        "inputs": [{"name": i.name, "type": i.type, "shape": i.shape}
                   for i in session.get_inputs()],
        "opsets": {o.domain: o.version for o in model.opset_import},
        "outputs": {n: np.asarray(v).tolist() for n, v in zip(names, values)},
    }
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
