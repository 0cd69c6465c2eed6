// libFuzzer target: bytes → a tokenizer.json (when they start with '{'), else text through small
// byte-level BPE and SentencePiece-style tokenizers; anything but a lathe::Error is a bug.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "lathe/core/error.h"
#include "lathe/data/tokenizer.h"

namespace {

const char* kByteLevel = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3,
  "Ġa": 4, "Ã": 5, "©": 6}, "merges": ["a b", "Ġ a"]},
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "decoder": {"type": "ByteLevel"},
  "added_tokens": [{"id": 7, "content": "<|endoftext|>", "special": true, "normalized": false},
                   {"id": 8, "content": "<mask>", "special": true, "lstrip": true,
                    "normalized": false}]})";

const char* kSentencePiece = R"({"model": {"type": "BPE", "vocab": {"<unk>": 0, "<s>": 1,
  "▁": 2, "a": 3, "▁a": 4, "<0xC3>": 5, "<0xA9>": 6}, "merges": ["▁ a"], "unk_token": "<unk>",
  "byte_fallback": true, "fuse_unk": true},
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
    {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"},
    "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "added_tokens": [{"id": 1, "content": "<s>", "special": true, "normalized": false},
                   {"id": 7, "content": "word", "single_word": true, "normalized": true}]})";

void round_trip(const lathe::data::Tokenizer& tok, std::string_view text) {
  const auto ids = tok.encode(text);
  tok.decode(ids, false);
  tok.decode(ids, true);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto byte_level = lathe::data::tokenizer_from_json(kByteLevel, "fuzz-bpe");
  static const auto sentencepiece = lathe::data::tokenizer_from_json(kSentencePiece, "fuzz-sp");
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  try {
    if (!input.empty() && input.front() == '{') {
      const auto tok = lathe::data::tokenizer_from_json(input, "fuzz/tokenizer.json");
      round_trip(*tok, "a b ab <s> word, é 中 \t\n");
    } else {
      round_trip(*byte_level, input);
      round_trip(*sentencepiece, input);
    }
  } catch (const lathe::Error&) {
  }
  return 0;
}
