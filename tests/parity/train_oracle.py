"""Python oracle for the train tests: scikit-learn metrics, torch.optim.lr_scheduler curves and
TensorBoard read-back, printed as JSON for the C++ tests to compare against.

  train_oracle.py metrics FILE.safetensors   FILE holds scores (N, K) float, tied (N, K) scores
                                             with ties, target (N) int64, reg_pred, reg_true (N, D)
  train_oracle.py schedules                  lr curves of torch schedulers (see SCHEDULES)
  train_oracle.py tensorboard DIR            {tag: [[step, value], ...]} from DIR's event file
  train_oracle.py options FILE.safetensors JSON
                                             a Linear model trained with torch from FILE's
                                             weight, bias, x, y under the options in JSON (loss,
                                             label_smoothing, class_weights, huber_delta, clip,
                                             clip_algorithm, lr, momentum, steps, batch): the
                                             final {weight, bias} and the loss of every step
  train_oracle.py plateau JSON               ReduceLROnPlateau's lr after each value of JSON's
                                             "values" (mode, factor, patience, threshold)
"""
import json
import sys


def metrics(path):
    import numpy as np
    from safetensors.numpy import load_file
    from sklearn import metrics as m

    t = load_file(path)
    scores, y = t["scores"], t["target"]
    pred = scores.argmax(1)
    out = {
        "accuracy": m.accuracy_score(y, pred),
        "top2_accuracy": m.top_k_accuracy_score(y, scores, k=2, labels=list(range(scores.shape[1]))),
        "confusion": m.confusion_matrix(y, pred, labels=list(range(scores.shape[1]))).tolist(),
    }
    for avg in ("macro", "micro", "weighted"):
        out[f"precision_{avg}"] = m.precision_score(y, pred, average=avg, zero_division=0)
        out[f"recall_{avg}"] = m.recall_score(y, pred, average=avg, zero_division=0)
        out[f"f1_{avg}"] = m.f1_score(y, pred, average=avg, zero_division=0)
    out["roc_auc"] = m.roc_auc_score(y, scores, multi_class="ovr", average="macro")
    yb = (y == 1).astype(np.int64)
    out["roc_auc_binary_class1"] = m.roc_auc_score(yb, t["tied"][:, 1])  # scores with ties
    p, r = t["reg_pred"], t["reg_true"]
    out["mae"] = m.mean_absolute_error(r, p)
    out["mse"] = m.mean_squared_error(r, p)
    out["rmse"] = float(np.mean(np.sqrt(((r - p) ** 2).mean(0))))
    out["r2"] = m.r2_score(r, p)
    print(json.dumps(out))


def schedules():
    import torch
    S = torch.optim.lr_scheduler

    def run(make, n=40, lr=1.0):
        p = torch.nn.Parameter(torch.zeros(1))
        o = torch.optim.SGD([p], lr=lr, momentum=0.9)
        s = make(o)
        out = []
        for _ in range(n):
            out.append(o.param_groups[0]["lr"])
            o.step()
            s.step()
        return out

    def per_epoch(make, epochs=4, steps_per_epoch=10, lr=1.0):
        """The scheduler stepped once per epoch of 10 optimizer steps: lr at every step."""
        p = torch.nn.Parameter(torch.zeros(1))
        o = torch.optim.SGD([p], lr=lr, momentum=0.9)
        s = make(o)
        out = []
        for _ in range(epochs):
            for _ in range(steps_per_epoch):
                out.append(o.param_groups[0]["lr"])
                o.step()
            s.step()
        return out

    print(json.dumps({
        "step": run(lambda o: S.StepLR(o, step_size=7, gamma=0.5)),
        "multistep": run(lambda o: S.MultiStepLR(o, milestones=[5, 12, 30], gamma=0.1)),
        "exponential": run(lambda o: S.ExponentialLR(o, gamma=0.9)),
        "cosine": run(lambda o: S.CosineAnnealingLR(o, T_max=40, eta_min=0.05)),
        "polynomial": run(lambda o: S.PolynomialLR(o, total_iters=40, power=2.0)),
        "onecycle": run(lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=40, pct_start=0.25,
                                               cycle_momentum=False)),
        "warmup_cosine": run(lambda o: S.SequentialLR(o, [
            S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=8),
            S.CosineAnnealingLR(o, T_max=32, eta_min=0.0)], milestones=[8])),
        "constant": run(lambda o: S.LambdaLR(o, lambda step: 1.0)),
        # warmup 8, then 24 stable steps and a linear decay to 0.1 over the last 8 (0.25 of 32)
        "wsd": run(lambda o: S.SequentialLR(o, [
            S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=8),
            S.ConstantLR(o, factor=1.0, total_iters=24),
            S.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=8)],
            milestones=[8, 32])),
        "step_per_epoch": per_epoch(lambda o: S.StepLR(o, step_size=1, gamma=0.5)),
    }))


def tensorboard(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(path)
    acc.Reload()
    print(json.dumps({tag: [[e.step, e.value] for e in acc.Scalars(tag)]
                      for tag in acc.Tags()["scalars"]}))


def options(path, spec):
    import torch
    from safetensors.torch import load_file

    t = load_file(path)
    o = json.loads(spec)
    net = torch.nn.Linear(t["weight"].shape[1], t["weight"].shape[0])
    with torch.no_grad():
        net.weight.copy_(t["weight"])
        net.bias.copy_(t["bias"])
    opt = torch.optim.SGD(net.parameters(), lr=o["lr"], momentum=o["momentum"])
    x, y, b = t["x"], t["y"], o["batch"]
    weight = torch.tensor(o["class_weights"]) if o.get("class_weights") else None
    losses = []
    for step in range(o["steps"]):
        i = (step * b) % x.shape[0]
        out, target = net(x[i:i + b]), y[i:i + b]
        if o["loss"] == "cross_entropy":
            loss = torch.nn.functional.cross_entropy(
                out, target, weight=weight, label_smoothing=o.get("label_smoothing", 0.0))
        elif o["loss"] == "l1":
            loss = torch.nn.functional.l1_loss(out.reshape(target.shape), target)
        elif o["loss"] == "huber":
            loss = torch.nn.functional.huber_loss(out.reshape(target.shape), target,
                                                  delta=o["huber_delta"])
        else:
            loss = torch.nn.functional.mse_loss(out.reshape(target.shape), target)
        opt.zero_grad()
        loss.backward()
        if o.get("clip", 0) > 0:
            if o["clip_algorithm"] == "value":
                torch.nn.utils.clip_grad_value_(net.parameters(), o["clip"])
            else:
                torch.nn.utils.clip_grad_norm_(net.parameters(), o["clip"])
        opt.step()
        losses.append(loss.item())
    print(json.dumps({"weight": net.weight.detach().flatten().tolist(),
                      "bias": net.bias.detach().tolist(), "losses": losses}))


def plateau(spec):
    import torch

    o = json.loads(spec)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    s = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=o["mode"], factor=o["factor"],
                                                   patience=o["patience"],
                                                   threshold=o["threshold"])
    out = []
    for v in o["values"]:
        s.step(v)
        out.append(opt.param_groups[0]["lr"])
    print(json.dumps(out))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "metrics":
        metrics(sys.argv[2])
    elif cmd == "schedules":
        schedules()
    elif cmd == "options":
        options(sys.argv[2], sys.argv[3])
    elif cmd == "plateau":
        plateau(sys.argv[2])
    else:
        tensorboard(sys.argv[2])
