"""train_bench's Python half: the same training steps as lathe's, in a plain PyTorch eager loop.

Reads the cases as JSON from argv[1] (train_bench.cpp writes them) and prints one JSON object:
{case name: {"step_s": median seconds per step, "step_s_fused": the same with AdamW(fused=True),
"steps": timed steps}}. step_s uses torch.optim.AdamW's defaults (on the CPU the single-tensor
loop; on CUDA fused=True is passed, as lathe's optim.fused=auto picks the fused kernel there). Each case is built as
lathe's zoo model of the same name is (same layers, shapes and kernels), trained with AdamW (weight
decay on weights of dim >= 2 only, as lathe's groups) and cross-entropy, under bf16 autocast when
the case says so. A step is forward, loss, backward, optimizer step and zero_grad(set_to_none).
Batches stay NCHW on the CPU here, as a plain loop has them; lathe's trainer.channels_last: auto
trains the convnet case channels-last there (its measured choice, models/registry.h).
With "profile_dir" set, the two steps after the warm-up run under torch.profiler, which writes
PROFILE_DIR/CASE/torch/{trace.json, profile.txt (operators by self time), ops.json}. With
"clock": "cpu", steps are timed in process CPU time (time.process_time) instead of wall time.
"""
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(o):
    layers, width = [], o["in_features"]
    for h in o["hidden"]:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, o["out_features"]))


class LstmLM(nn.Module):
    def __init__(self, o):
        super().__init__()
        self.embedding = nn.Embedding(o["vocab_size"], o["embedding_dim"])
        self.lstm = nn.LSTM(o["embedding_dim"], o["hidden_size"], o["num_layers"], batch_first=True)
        self.fc = nn.Linear(o["hidden_size"], o["vocab_size"])

    def forward(self, ids):  # (B, T) -> (B, T, V)
        return self.fc(self.lstm(self.embedding(ids))[0])


def convnet(o):  # lathe's convnet, as configs/fashion_cnn.yaml builds it (ReLU in place)
    layers, width, side = [], o["in_channels"], o["image_size"]
    for c in o["channels"]:
        layers += [nn.Conv2d(width, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        width, side = c, side // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(o["dropout"]),
                         nn.Linear(width * side * side, o["hidden"]), nn.ReLU(inplace=True),
                         nn.Dropout(o["dropout"]), nn.Linear(o["hidden"], o["num_classes"]))


def resnet18(o):
    import torchvision

    m = torchvision.models.resnet18(num_classes=o["num_classes"])
    if o.get("small_input"):  # lathe's small_input stem: 3x3 stride 1, no max pool
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
    return m


class Conv1D(nn.Module):  # Hugging Face's: weight [in, out], y = x W + b
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.02)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        shape = x.shape[:-1] + (self.weight.shape[1],)
        return torch.addmm(self.bias, x.view(-1, x.shape[-1]), self.weight).view(shape)


class Block(nn.Module):
    def __init__(self, c, heads, p):
        super().__init__()
        self.heads, self.p = heads, p
        self.ln_1, self.ln_2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.c_attn, self.attn_proj = Conv1D(c, 3 * c), Conv1D(c, c)
        self.c_fc, self.mlp_proj = Conv1D(c, 4 * c), Conv1D(4 * c, c)

    def forward(self, x):  # (B, T, C)
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        p = self.p if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + F.dropout(self.attn_proj(a.transpose(1, 2).reshape(b, t, c)), p, self.training)
        m = self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x + F.dropout(m, p, self.training)


class GPT2(nn.Module):
    def __init__(self, o):
        super().__init__()
        c, p = o["n_embd"], o.get("dropout", 0.1)
        self.p = p
        self.wte, self.wpe = nn.Embedding(o["vocab_size"], c), nn.Embedding(o["n_positions"], c)
        self.h = nn.ModuleList(Block(c, o["n_head"], p) for _ in range(o["n_layer"]))
        self.ln_f = nn.LayerNorm(c)

    def forward(self, ids):  # (B, T) -> (B, T, V), lm_head tied to wte
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = F.dropout(self.wte(ids) + self.wpe(pos), self.p, self.training)
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


BUILDERS = {"mlp": mlp, "lstm_lm": LstmLM, "convnet": convnet, "resnet18": resnet18, "gpt2": GPT2}


def profile_steps(case, step, batches, profile_dir):
    """Two steps under torch.profiler: a Chrome trace and the operator table, as lathe writes."""
    out = os.path.join(profile_dir, case["name"], "torch")
    os.makedirs(out, exist_ok=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(2):
            step(*batches[i % len(batches)])
    prof.export_chrome_trace(os.path.join(out, "trace.json"))
    averages = prof.key_averages()
    with open(os.path.join(out, "profile.txt"), "w") as f:
        f.write(averages.table(sort_by="self_cpu_time_total", row_limit=30))
    ops = {e.key: {"calls": e.count, "self_us": e.self_cpu_time_total} for e in averages}
    with open(os.path.join(out, "ops.json"), "w") as f:
        json.dump(ops, f, indent=1, sort_keys=True)


def run_case(case, device, fused, profile_dir="", clock=time.perf_counter):
    torch.manual_seed(0)
    model = BUILDERS[case["model"]](case["options"]).to(device)
    if case.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    fused = fused or device.type == "cuda"
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": rest, "weight_decay": 0.0}], lr=1e-3, fused=fused or None)
    b, shape, lm = case["batch"], case["input"], case["task"] == "lm"
    batches = []
    for _ in range(case["distinct_batches"]):
        if lm or case["input_kind"] == "ids":
            x = torch.randint(0, case["classes"], (b, *shape))
            y = torch.randint(0, case["classes"], (b, *shape)) if lm else torch.randint(0, case["classes"], (b,))
        else:
            x = torch.randn(b, *shape)
            y = torch.randint(0, case["classes"], (b,))
        batches.append((x.to(device), y.to(device)))
    if case.get("channels_last"):
        batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]
    bf16 = case["precision"] == "bf16"
    running = torch.zeros((), device=device)

    def step(x, y):
        nonlocal running
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        running += loss.detach()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    i = 0
    for _ in range(case["warmup"]):
        step(*batches[i % len(batches)])
        i += 1
    sync()
    if profile_dir:
        profile_steps(case, step, batches, profile_dir)
    times = []
    for _ in range(case["repeats"]):
        t0 = clock()
        for _ in range(case["steps"]):
            step(*batches[i % len(batches)])
            i += 1
        sync()
        times.append((clock() - t0) / case["steps"])
    if not math.isfinite(running.item()):
        raise RuntimeError(f"{case['name']}: non-finite loss")
    return {"step_s": statistics.median(times), "steps": case["repeats"] * case["steps"]}


def main():
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    clock = time.process_time if spec.get("clock") == "cpu" else time.perf_counter
    out = {}
    for case in spec["cases"]:
        out[case["name"]] = run_case(case, device, fused=False, clock=clock)
        if spec.get("profile_dir"):  # lathe's default AdamW is the fused one: compare with that
            run_case(case, device, fused=True, profile_dir=spec["profile_dir"])
        if device.type == "cpu" and spec.get("fused_too"):
            out[case["name"]]["step_s_fused"] = run_case(case, device, fused=True,
                                                         clock=clock)["step_s"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
