"""Python oracle for the model-zoo parity tests: builds the reference model at small size with a
fixed seed, writes its weights, an input and the outputs; the C++ test loads and compares.

  zoo_oracle.py MODEL OUT_DIR

writes OUT_DIR/weights.safetensors (or weights.pt for the models marked so), OUT_DIR/io.safetensors
(input, output, and for BatchNorm models train_input, train_output and after_train.<buffer>), and
prints the reference's parameter count (sum of p.numel() over model.parameters()).
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from safetensors.torch import save_file
from torch import nn


def _save_weights(model, path, drop=()):
    sd = {k: v for k, v in model.state_dict().items() if k not in drop}
    if path.endswith(".pt"):
        torch.save(model.state_dict(), path)  # as a user would: everything, tied weights too
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, path, metadata={"format": "pt"})


def _warm_batchnorm(model, make_input):
    """A few train-mode forwards so BatchNorm's running statistics are not the defaults."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(make_input() * 2 + 0.5)


def dump(model, inputs, out_dir, weights="weights.safetensors", train_input=None, drop=(),
         extra=None, train_output=True):
    """Eval-mode output for `inputs` (a dict name -> tensor, passed in order); with train_input,
    one train-mode forward afterwards and the buffers it leaves (and its output, unless the
    model has dropout: train_output=False)."""
    model.eval()
    _save_weights(model, os.path.join(out_dir, weights), drop)
    io = dict(inputs)
    with torch.no_grad():
        out = model(*inputs.values())
    io["output"] = out
    if train_input is not None:
        model.train()
        with torch.no_grad():
            out = model(train_input)
        if train_output:
            io["train_output"] = out
        io["train_input"] = train_input
        for name, buf in model.named_buffers():
            io["after_train." + name] = buf
    io.update(extra or {})
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out_dir, "io.safetensors"))
    print(sum(p.numel() for p in model.parameters()))


# ---- CNN (torchvision) -------------------------------------------------------------------------

def resnet(out_dir, depth, small_input=False, weights="weights.safetensors"):
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, f"resnet{depth}")(num_classes=10)
    side = 32 if small_input else 64
    if small_input:  # the CIFAR stem lathe's small_input builds
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    _warm_batchnorm(model, lambda: torch.randn(4, 3, side, side))
    dump(model, {"input": torch.randn(2, 3, side, side)}, out_dir, weights,
         train_input=torch.randn(4, 3, side, side))


def mobilenet_v2(out_dir):
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.75)
    _warm_batchnorm(model, lambda: torch.randn(4, 3, 64, 64))
    dump(model, {"input": torch.randn(2, 3, 64, 64)}, out_dir,
         train_input=torch.randn(4, 3, 64, 64), train_output=False)  # classifier has dropout


COMMANDS = {
    "resnet18": lambda d: resnet(d, 18),
    "resnet18_small_pt": lambda d: resnet(d, 18, small_input=True, weights="weights.pt"),
    "resnet50": lambda d: resnet(d, 50),
    "mobilenet_v2": mobilenet_v2,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](sys.argv[2])
