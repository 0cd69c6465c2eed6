// libFuzzer target: text → WordPiece tokenize and encode with a small BERT-style vocabulary;
// anything but a lathe::Error (a crash, a hang, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lathe/core/error.h"
#include "lathe/data/text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const lathe::data::WordPiece tok(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "un", "##aff", "##able", "a",
       "##b",   "é",     "##ü",   "中",    ",",      "!",   "'",  "##s",   "hello",  "world"},
      size % 2 == 0, "fuzz-vocab");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    tok.tokenize(text);
    tok.encode(text, 16);
  } catch (const lathe::Error&) {
  }
  return 0;
}
