"""Python oracle for the EMA test: timm's ModelEmaV3 applied to the weights lathe trained.

  ema_oracle.py CASE.safetensors... each holds a model's tensors before training ("init/NAME")
                                    and after each optimizer step ("model/STEP/NAME", STEP from
                                    1); its metadata: "buffers" (comma-separated buffer names)
                                    and "options" (JSON: decay, min_decay, update_after_step,
                                    use_warmup, warmup_gamma, warmup_power, exclude_buffers,
                                    steps).
Writes CASE.timm.safetensors with ModelEmaV3's weights after each update ("ema/STEP/NAME") and
prints {CASE: [get_decay(0), ..., get_decay(steps + 3)]} as JSON.
"""
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.utils.model_ema import ModelEmaV3


def module_from(tensors, buffers):
    """A module whose state dict is `tensors` (parameters, or buffers when named in `buffers`)."""
    root = torch.nn.Module()
    for name, t in tensors.items():
        *path, leaf = name.split(".")
        m = root
        for part in path:
            if not hasattr(m, part):
                m.add_module(part, torch.nn.Module())
            m = getattr(m, part)
        if name in buffers:
            m.register_buffer(leaf, t.clone())
        else:
            m.register_parameter(leaf, torch.nn.Parameter(t.clone()))
    return root


def run_case(path):
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    opts = json.loads(meta["options"])
    buffers = set(filter(None, meta["buffers"].split(",")))
    everything = load_file(path)
    init = {k[len("init/"):]: v for k, v in everything.items() if k.startswith("init/")}
    model = module_from(init, buffers)
    ema = ModelEmaV3(model, decay=opts["decay"], min_decay=opts["min_decay"],
                     update_after_step=opts["update_after_step"], use_warmup=opts["use_warmup"],
                     warmup_gamma=opts["warmup_gamma"], warmup_power=opts["warmup_power"],
                     foreach=True, exclude_buffers=opts["exclude_buffers"])
    out = {}
    model_sd = model.state_dict()
    for step in range(1, opts["steps"] + 1):
        with torch.no_grad():
            for name, t in model_sd.items():
                t.copy_(everything[f"model/{step}/{name}"])
        ema.update(model, step=step)
        for name, t in ema.module.state_dict().items():
            out[f"ema/{step}/{name}"] = t.detach().clone().contiguous()
    save_file(out, path.replace(".safetensors", ".timm.safetensors"))
    return [ema.get_decay(s) for s in range(opts["steps"] + 4)]


if __name__ == "__main__":
    print(json.dumps({p: run_case(p) for p in sys.argv[1:]}))
