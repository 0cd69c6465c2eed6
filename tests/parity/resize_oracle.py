"""Python oracle for lathe's uint8 resize: torchvision's Resize(antialias=True) on uint8 tensors
(PyTorch's uint8 kernel, the one v2.RandomResizedCrop uses) over crops of one image.

  resize_oracle.py OUT_DIR
    -> OUT_DIR/image.bin   (3, 375, 500) uint8 raw: smooth colour fields plus noise
       OUT_DIR/cases.txt   one case a line: top left height width out_height out_width channels
                           (channels 1: the crop's first channel only)
       OUT_DIR/resized.bin the cases' results, (channels, out_height, out_width) uint8 each, in order
"""
import sys
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F


def main(out: Path):
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:375, 0:500]
    img = np.stack([128 + 100 * np.sin(x / (5 + 3 * c) + y / (9 + c) + rng.random() * 6) for c in range(3)])
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)  # (3, 375, 500)
    img.tofile(out / "image.bin")
    t = torch.from_numpy(img)

    cases = [
        (0, 0, 375, 500, 224, 224, 3),    # the whole image, both axes shrink
        (10, 20, 100, 120, 224, 224, 3),  # both axes grow
        (5, 7, 300, 224, 224, 224, 3),    # the width stays: the vertical pass only
        (5, 7, 224, 301, 224, 224, 3),    # the height stays: the horizontal pass only
        (0, 0, 375, 500, 7, 9, 3),        # a large factor: many taps per output
        (3, 480, 50, 1, 224, 224, 3),     # one column, at the right edge
        (370, 0, 5, 3, 224, 224, 3),      # the bottom rows, three columns
        (0, 0, 375, 500, 256, 341, 3),    # resize_shorter(256)'s shape
        (11, 13, 333, 251, 224, 224, 1),  # one channel
        (0, 0, 375, 500, 57, 224, 1),
    ]
    for _ in range(60):  # random_resized_crop's boxes: random area and aspect, out 224
        h, w = int(rng.integers(1, 376)), int(rng.integers(1, 501))
        cases.append((int(rng.integers(0, 376 - h)), int(rng.integers(0, 501 - w)), h, w, 224, 224, 3))
    for _ in range(20):  # odd output sizes
        h, w = int(rng.integers(1, 376)), int(rng.integers(1, 501))
        cases.append((int(rng.integers(0, 376 - h)), int(rng.integers(0, 501 - w)), h, w,
                      int(rng.integers(1, 400)), int(rng.integers(1, 400)), int(rng.choice([1, 3]))))

    results = []
    for top, left, h, w, oh, ow, c in cases:
        crop = t[:c, top:top + h, left:left + w]
        results.append(F.resize(crop, [oh, ow], antialias=True).contiguous().numpy().ravel())
    np.concatenate(results).tofile(out / "resized.bin")
    (out / "cases.txt").write_text("".join(" ".join(map(str, c)) + "\n" for c in cases))
    print("ok")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
