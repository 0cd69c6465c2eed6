"""Python oracle for the image tests: PIL writes an image folder; PIL and torchvision give the
decoded pixels and the resized images lathe must reproduce.

  image_oracle.py OUT_DIR
    -> OUT_DIR/folder/{cat,dog,empty}/...   2 PNGs (cat), 2 JPEGs (dog), a broken file (bad/)
       OUT_DIR/dog0.rgb                     PIL's decode of folder/dog/0.jpg, (H, W, 3) uint8 raw
       OUT_DIR/resize_{u8,f32}_{h}x{w}.bin  torchvision resize(antialias=True) of folder/cat/0.png
                                            as (3, h, w), uint8 or float32 ([0, 1] input) raw
       OUT_DIR/window/*.jpg                 JPEGs of odd sizes in every chroma subsampling PIL
                                            writes (4:4:4, 4:2:2, 4:2:0, progressive, grey) for
                                            the window-decoding test
"""
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F


def smooth_image(rng, h, w):
    """A natural-looking image: smooth gradients plus a little noise."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(x / (7 + 3 * c) + y / (11 + c) + rng.random() * 6) for c in range(3)], -1)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def main(out: Path):
    rng = np.random.default_rng(0)
    root = out / "folder"
    for d in ["cat", "dog", "empty"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    cat0 = smooth_image(rng, 40, 52)
    Image.fromarray(cat0).save(root / "cat" / "0.png")
    Image.fromarray(smooth_image(rng, 33, 27)).convert("L").save(root / "cat" / "1.png")
    dog0 = smooth_image(rng, 64, 48)
    Image.fromarray(dog0).save(root / "dog" / "0.jpg", quality=95)
    Image.fromarray(smooth_image(rng, 30, 30)).save(root / "dog" / "1.JPEG", quality=80)
    (root / "dog" / "notes.txt").write_text("not an image")
    np.asarray(Image.open(root / "dog" / "0.jpg").convert("RGB")).tofile(out / "dog0.rgb")

    (out / "window").mkdir()
    for name, h, w, opts in [("s444", 101, 77, {"subsampling": 0}), ("s422", 67, 130, {"subsampling": 1}),
                             ("s420", 123, 95, {"subsampling": 2}),
                             ("progressive", 90, 111, {"subsampling": 2, "progressive": True})]:
        Image.fromarray(smooth_image(rng, h, w)).save(out / "window" / f"{name}.jpg", quality=90, **opts)
    Image.fromarray(smooth_image(rng, 75, 58)).convert("L").save(out / "window" / "grey.jpg", quality=90)

    t = torch.from_numpy(cat0).permute(2, 0, 1).contiguous()  # (3, 40, 52)
    for h, w in [(13, 21), (70, 90)]:
        F.resize(t, [h, w], antialias=True).numpy().tofile(out / f"resize_u8_{h}x{w}.bin")
        F.resize(t.float() / 255, [h, w], antialias=True).numpy().tofile(out / f"resize_f32_{h}x{w}.bin")
    print("ok")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
