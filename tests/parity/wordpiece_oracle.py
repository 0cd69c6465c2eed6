"""Python oracle for the WordPiece tests: builds a BERT vocab.txt from scikit-learn's data-set
descriptions and writes the ids Hugging Face's BertTokenizer gives for a set of hard texts.

  wordpiece_oracle.py OUT_DIR
    -> OUT_DIR/vocab.txt, OUT_DIR/cases.json: [{text, max_length, ids, attention_mask}], and
       OUT_DIR/reviews.csv (text, label) for the text-classification source.
"""
import collections
import json
import re
import sys
from pathlib import Path

import sklearn
from transformers import BertTokenizer

TEXTS = [
    "Hello, world! This is a TEST of the tokenizer.",
    "Café déjà vu: naïve résumé, Ångström and Œuvre — über-cool façade.",
    "Numbers 3.14159, 2,718 and 1e-9; e-mail: someone@example.com (quoted) [brackets] {braces}",
    "中文字符 mixed with English 日本語 text",
    "Tabs\tand\nnewlines\r\nand   spaces, \u00a0no-break\u2003em-space",
    "Controls\u0000 and \u200b zero-width\ufeff and \ufffd replacement",
    "Emoji 😀 and symbols ™ © ® § ¶ † ‡ • … ‰ ′ ″ ‹ › « » ¿ ¡",
    "supercalifragilisticexpialidocious unbelievably antidisestablishmentarianism " * 3,
    "[CLS] special [SEP] tokens [MASK] inside text [PAD]",
    "The wine data set: alcohol, malic acid, ash, alcalinity of ash, magnesium, phenols, "
    "flavanoids, proanthocyanins, colour intensity, hue, OD280/OD315 and proline were measured.",
    "",
    "a" * 120,
    "ÀÉÎÕÜ àéîõü ÇçÑñ ŠšŽž ĄąĘęŁłŃńŚśŹźŻż ǅǈ ﬁ ﬂ Ⅻ ①",
]
MAX_LENGTHS = [0, 16, 48]


def build_vocab(out: Path) -> Path:
    text = ""
    for f in sorted((Path(sklearn.__file__).parent / "datasets" / "descr").glob("*.rst")):
        text += f.read_text(encoding="utf-8") + "\n"
    words = collections.Counter(w.lower() for w in re.findall(r"[A-Za-z]+", text))
    chars = sorted(set(c.lower() for c in text if not c.isspace()) | set("abcdefghijklmnopqrstuvwxyz0123456789") | set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") | set("中文字日本語"))
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(5)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += chars + ["##" + c for c in chars if c.isalnum()]
    vocab += ["##ing", "##ed", "##s", "##ly", "##tion", "##al", "##er", "un", "super", "##able"]
    vocab += [w for w, n in words.most_common(1500) if n > 1]
    seen, unique = set(), []
    for t in vocab:
        if t not in seen:
            seen.add(t)
            unique.append(t)
    path = out / "vocab.txt"
    path.write_text("\n".join(unique) + "\n", encoding="utf-8")
    return path


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(out)
    tok = BertTokenizer.from_pretrained(str(out), do_lower_case=True)  # reads OUT_DIR/vocab.txt
    cases = []
    for text in TEXTS:
        for m in MAX_LENGTHS:
            if m:
                enc = tok(text, max_length=m, truncation=True, padding="max_length")
            else:
                enc = tok(text)
            cases.append({"text": text, "max_length": m, "ids": enc["input_ids"],
                          "attention_mask": enc["attention_mask"],
                          "tokens": tok.convert_ids_to_tokens(enc["input_ids"])})
    (out / "cases.json").write_text(json.dumps(cases, ensure_ascii=False, indent=1), encoding="utf-8")
    with open(out / "reviews.csv", "w", encoding="utf-8") as f:
        f.write('text,label\n"Great wine, very fruity!",pos\n"Too much ash; bitter.",neg\n'
                '"Hue and colour intensity: superb",pos\n')
    print("ok", type(tok).__name__)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
