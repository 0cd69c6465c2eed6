"""Python oracle for the tokenizer.json tests: trains tokenizers with the `tokenizers` library's
own trainers on the fortunes, saves each as tokenizer.json, and writes the ids and decoded texts
`tokenizers` gives for a corpus of hard texts.

  tokenizer_oracle.py OUT_DIR
    -> OUT_DIR/<kind>/{tokenizer.json, ids.txt (one line of ids per text), plain_ids.txt (the
       hard texts without special tokens), long_word.txt (a 1 MB word)} for kind in gpt2, llama3, qwen2 (byte-level BPE, one per
       split pattern), llama2 (SentencePiece-style BPE with byte fallback: Prepend/Replace
       normaliser), mistral (the same model behind a Metaspace pre-tokenizer), wordpiece;
       OUT_DIR/cases.json: {"texts": [...], "hard": [...], "<kind>": {"decoded": [...],
       "decoded_skip": [...], "vocab_size": N}, "counts": {...}}
"""
import json
import sys
import unicodedata
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

FORTUNES = Path("/usr/share/games/fortunes")
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
          r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def fortunes():
    out = []
    for f in sorted(FORTUNES.iterdir()):
        if f.suffix in (".dat", ".u8") or f.is_symlink() or not f.is_file():
            continue
        text = f.read_bytes().decode("utf-8", errors="replace")
        out += [t for t in text.split("\n%\n") if t.strip()]
    return out


def unicode_texts():
    """Up to 48 code points of every general category (surrogates aside), spread over the range,
    in runs alone, between letters and between spaces."""
    by_cat = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        by_cat.setdefault(unicodedata.category(chr(cp)), []).append(chr(cp))
    texts = []
    for cat in sorted(by_cat):
        chars = by_cat[cat]
        step = max(1, len(chars) // 48)
        picked = chars[::step][:48]
        texts.append("".join(picked))
        texts.append(" ".join(picked))
        texts.append("a" + "b ".join(picked) + "z")
        texts.append(f"{cat}: word{''.join(picked[:6])}word 12{picked[0]}34")
    return texts


HARD = [
    "Hello, world! This is a TEST of the tokenizer.",
    "I'm sure you're right; they've said it'll be fine, we'd go. DON'T SHOUT, I'M HERE.",
    "Café déjà vu: naïve résumé, Ångström and Œuvre — über-cool façade.",
    "中文字符 mixed with English 日本語のテキスト and 한국어 문장 too",
    "这是一个测试。我们正在测试分词器！",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇯🇵 1️⃣ ❤️‍🔥 🧑🏿‍💻 👩🏻‍❤️‍💋‍👨🏼",
    "Tabs\tand\nnewlines\r\nand   spaces, \u00a0no-break\u2003em-space\u3000ideographic",
    "   leading spaces and trailing   ",
    "\n\n\n\nnewlines only\n\n",
    "\t\t\ttabs\t \t \n \n  \n",
    "a  b   c    d     e      f",
    "Numbers 3.14159, 2,718 and 1e-9; 1234567890 12 123 1234 ٣٤٥ ①②③ Ⅻ",
    "Controls\u0000 and \u200b zero-width\ufeff and \ufffd replacement \u0007 bell",
    "Arabic: مرحبا بالعالم. Hebrew: שלום עולם. Hindi: नमस्ते दुनिया. Thai: สวัสดีชาวโลก",
    "Combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353 and precomposed é ä ñ",
    "Math: ∀x∈ℝ, ∃y: x²+y²≤1 ⇒ ∫₀¹ f(x)dx ≈ π/4 ∑∏√∞",
    "code: def f(x):\n    return x**2  # comment\n\tif (a && b) { return; }",
    "<|endoftext|>special at the start and<|endoftext|>in the middle<|endoftext|>",
    "<s>bos</s> and [CLS] cls [SEP] sep [PAD] pad [MASK] and <unk>",
    "text <mask> with a stripped mask <mask>   and   <mask>",
    "added tokens: lathe_token inside, xlathe_tokenx glued, and new_word new_words.",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
    "",
    " ",
    "a",
    "supercalifragilisticexpialidocious antidisestablishmentarianism " * 3,
    "x" * 300,
    "ab" * 200 + " " + "🙂" * 50,
    "Ünïcödé ÜPPER CASE and İstanbul ǅ ǈ ﬁ ﬂ ß ẞ ΣΑΣ σας",
]


def train(kind, corpus):
    specials = {
        "gpt2": ["<|endoftext|>"],
        "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"],
        "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "llama2": ["<unk>", "<s>", "</s>"],
        "wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    }[kind]
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=4000, special_tokens=specials,
                                            show_progress=False)
        tok.train_from_iterator(corpus, trainer)
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        return tok
    if kind == "llama2":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=specials, limit_alphabet=150,
                                      show_progress=False)
        tok.train_from_iterator(corpus, trainer)
        # The byte tokens <0x00>..<0xFF> join the vocabulary (ordinary tokens, as Llama 2's).
        data = json.loads(tok.to_str())
        vocab = data["model"]["vocab"]
        for b in range(256):
            vocab.setdefault(f"<0x{b:02X}>", len(vocab))
        tok = Tokenizer.from_str(json.dumps(data))
        tok.pre_tokenizer = None
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
        return tok
    tok = Tokenizer(models.BPE(ignore_merges=(kind == "llama3")))
    if kind == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        pattern = LLAMA3 if kind == "llama3" else QWEN2
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        if kind == "qwen2":
            tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    if kind == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])
    return tok


def add_tokens(tok):
    """Added tokens of every flavour: a special one that takes the spaces on its left, a
    single-word one, a normalised one, a special one that is not normalised."""
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, special=True,
                                       normalized=False)])
    tok.add_tokens([AddedToken("lathe_token", single_word=True, special=False),
                    AddedToken("new_word", normalized=True, special=False)])


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    corpus = fortunes()
    long_word = "ab" * 500_000  # one 1 MB word
    texts = corpus + unicode_texts() + HARD
    cases = {"texts": texts, "hard": HARD, "long_word": long_word, "counts": {"fortunes": len(corpus),
                                         "unicode": len(texts) - len(corpus) - len(HARD),
                                         "hard": len(HARD)}}
    for kind in ["gpt2", "llama3", "qwen2", "llama2", "mistral", "wordpiece"]:
        if kind == "mistral":  # Llama 2's model behind Metaspace (prepend first, no split)
            tok = Tokenizer.from_file(str(out / "llama2" / "tokenizer.json"))
            tok.normalizer = None
            tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                         split=False)
        else:
            tok = train(kind, corpus)
            add_tokens(tok)
        (out / kind).mkdir(exist_ok=True)
        tok.save(str(out / kind / "tokenizer.json"))
        tok = Tokenizer.from_file(str(out / kind / "tokenizer.json"))
        ids = [e.ids for e in tok.encode_batch(texts)]
        plain = [e.ids for e in tok.encode_batch(HARD, add_special_tokens=False)]
        lines = lambda rows: "".join(" ".join(map(str, r)) + "\n" for r in rows)
        (out / kind / "ids.txt").write_text(lines(ids))
        (out / kind / "plain_ids.txt").write_text(lines(plain))
        (out / kind / "long_word.txt").write_text(lines([tok.encode(long_word).ids]))
        cases[kind] = {
            "decoded": tok.decode_batch(ids, skip_special_tokens=False),
            "decoded_skip": tok.decode_batch(ids, skip_special_tokens=True),
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        }
    (out / "cases.json").write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
