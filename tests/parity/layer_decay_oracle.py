"""Python oracle for the layer-decay test (tests/unit/test_finetune.cpp): timm's
param_groups_layer_decay on a small timm VisionTransformer, each parameter's lr_scale written
under its torchvision name (lathe's ViT has torchvision's names).

  layer_decay_oracle.py OUT.json DECAY
"""
import json
import re
import sys

import torch
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_layer_decay

# timm name → torchvision name (the same tensors: lathe's vit loads torchvision's weights)
RULES = [
    (r"^cls_token$", "class_token"),
    (r"^pos_embed$", "encoder.pos_embedding"),
    (r"^patch_embed\.proj\.", "conv_proj."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.encoder_layer_\1.ln_1."),
    (r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"encoder.layers.encoder_layer_\1.self_attention.in_proj_\2"),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.encoder_layer_\1.self_attention.out_proj."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.encoder_layer_\1.ln_2."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"encoder.layers.encoder_layer_\1.mlp.0."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"encoder.layers.encoder_layer_\1.mlp.3."),
    (r"^norm\.", "encoder.ln."),
    (r"^head\.", "heads.head."),
]


def torchvision_name(name):
    for pattern, repl in RULES:
        if re.search(pattern, name):
            return re.sub(pattern, repl, name)
    raise SystemExit(f"no torchvision name for timm's {name}")


def main():
    out, decay = sys.argv[1], float(sys.argv[2])
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                              mlp_ratio=2.0, num_classes=10)
    names = {id(p): n for n, p in model.named_parameters()}
    scales = {}
    for group in param_groups_layer_decay(model, weight_decay=0.05, layer_decay=decay):
        for p in group["params"]:
            scales[torchvision_name(names[id(p)])] = group["lr_scale"]
    with open(out, "w") as f:
        json.dump(scales, f, indent=1)


if __name__ == "__main__":
    main()
