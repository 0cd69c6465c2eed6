"""Python oracle for the ckpt tests: PyTorch writes weights and reference outputs; reads ours.

  safetensors_oracle.py convnet OUT_DIR  -> OUT_DIR/weights.safetensors, OUT_DIR/io.safetensors
  safetensors_oracle.py check FILE       -> exit 0 when FILE holds what the C++ test wrote
"""
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn


def convnet(in_channels=1, num_classes=5, channels=(4, 8), hidden=16, image_size=28, dropout=0.25):
    """The nn.Sequential layout lathe's ConvNet mirrors, name for name."""
    layers, c = [], in_channels
    for out in channels:
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(),
                   nn.MaxPool2d(2)]
        c = out
    side = image_size >> len(channels)
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * side * side, hidden),
                                     nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    model.forward = lambda x: model.classifier(model.features(x))
    return model


def write_convnet(out_dir):
    torch.manual_seed(0)
    model = convnet()
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            model(torch.randn(8, 1, 28, 28) * 2 + 0.5)
    model.eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        y = model(x)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out_dir}/weights.safetensors",
              metadata={"format": "pt"})
    save_file({"input": x, "output": y}, f"{out_dir}/io.safetensors")
    print(sum(p.numel() for p in model.parameters()))


# What the C++ test writes: name -> (dtype, shape); values are arange(numel) cast to the dtype.
EXPECTED = {
    "f64": (torch.float64, (2, 3)), "f32": (torch.float32, (4,)), "f16": (torch.float16, (2, 2)),
    "bf16": (torch.bfloat16, (3,)), "i64": (torch.int64, (2, 2)), "i32": (torch.int32, (5,)),
    "i16": (torch.int16, (1, 3)), "i8": (torch.int8, (4,)), "u8": (torch.uint8, (2, 3)),
    "scalar": (torch.float32, ()),
}


def check(path):
    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta == {"format": "pt", "origin": "lathe"}, meta
    assert set(tensors) == set(EXPECTED), sorted(tensors)
    for name, (dtype, shape) in EXPECTED.items():
        t = tensors[name]
        want = torch.arange(max(1, int(torch.Size(shape).numel()))).to(dtype).reshape(shape)
        assert t.dtype == dtype and tuple(t.shape) == shape, (name, t.dtype, t.shape)
        assert torch.equal(t, want), (name, t, want)
    print("ok")


if __name__ == "__main__":
    {"convnet": write_convnet, "check": check}[sys.argv[1]](sys.argv[2])
