"""The Python side of bench/data_bench: torch.utils.data.DataLoader on the same data and transforms.

  data_bench.py FASHION_DIR JPEG_DIR BATCHES  -> one JSON object on stdout:
    fashion_batches_per_s   Fashion-MNIST train, batch 128, shuffle, RandomCrop(28, padding=4) +
                            RandomHorizontalFlip + Normalize, num_workers=2
    jpeg_images_per_s       JPEG_DIR/*.jpg: read + torchvision.io.decode_jpeg + RandomResizedCrop(224)
                            + RandomHorizontalFlip, batch 32, num_workers=2
    jpeg_images_per_s_core  the same in the main process (num_workers=0, 1 torch thread): one core
"""
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import decode_jpeg
from torchvision.transforms import v2


def read_idx(file):
    with gzip.open(file, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class Fashion(Dataset):
    def __init__(self, folder):
        self.x = torch.from_numpy(read_idx(Path(folder) / "train-images-idx3-ubyte.gz").copy()).float().div_(255).unsqueeze(1)
        self.y = torch.from_numpy(read_idx(Path(folder) / "train-labels-idx1-ubyte.gz").astype(np.int64))
        self.t = v2.Compose([v2.RandomCrop(28, padding=4), v2.RandomHorizontalFlip(), v2.Normalize([0.286], [0.353])])

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.t(self.x[i]), self.y[i]


class Jpegs(Dataset):
    def __init__(self, folder):
        self.files = sorted(Path(folder).glob("*.jpg"))
        self.t = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        data = torch.frombuffer(bytearray(self.files[i].read_bytes()), dtype=torch.uint8)
        return self.t(decode_jpeg(data)), 0


def rate(loader, max_batches):
    """(batches/s, records/s) over at most max_batches batches, after one warm-up batch."""
    it = iter(loader)
    next(it)
    t0, batches, records = time.perf_counter(), 0, 0
    for x, _ in it:
        batches += 1
        records += x.shape[0]
        if batches >= max_batches:
            break
    dt = time.perf_counter() - t0
    return batches / dt, records / dt


def main(fashion_dir, jpeg_dir, max_batches):
    torch.set_num_threads(1)
    out = {}
    fashion = DataLoader(Fashion(fashion_dir), batch_size=128, shuffle=True, num_workers=2,
                         persistent_workers=False)
    out["fashion_batches_per_s"] = rate(fashion, max_batches)[0]
    jpegs = Jpegs(jpeg_dir)
    out["jpeg_images_per_s"] = rate(DataLoader(jpegs, batch_size=32, shuffle=True, num_workers=2), 10**9)[1]
    out["jpeg_images_per_s_core"] = rate(DataLoader(jpegs, batch_size=32, shuffle=True, num_workers=0), 10**9)[1]
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
