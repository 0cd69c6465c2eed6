// Greedy longest-match WordPiece over one word: shared by the vocab.txt WordPiece and tokenizer.json's.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::data::detail {

/// Bytes in the UTF-8 sequence that starts with `lead` (1 for a stray continuation byte).
inline size_t utf8_length(unsigned char lead) {
  return lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

/// Code points in valid UTF-8 `s`.
inline size_t utf8_count(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i += utf8_length(static_cast<unsigned char>(s[i]))) ++n;
  return n;
}

/// The pieces of `word`: the longest prefix `known` accepts, then the longest continuation
/// (written `prefix` + text) from where it ended, and so on; nothing when some position has no
/// known piece (the caller then emits its unknown token for the whole word).
template <class Known>
std::optional<std::vector<std::string>> wordpiece_greedy(std::string_view word,
                                                         std::string_view prefix, Known&& known) {
  std::vector<size_t> cut;  // byte offsets of the code points, then the end
  for (size_t i = 0; i < word.size(); i += utf8_length(static_cast<unsigned char>(word[i])))
    cut.push_back(i);
  cut.push_back(word.size());
  const size_t chars = cut.size() - 1;
  std::vector<std::string> pieces;
  for (size_t start = 0; start < chars;) {
    size_t end = chars;
    std::string found;
    for (; end > start; --end) {
      std::string sub(word.substr(cut[start], cut[end] - cut[start]));
      if (start > 0) sub.insert(0, prefix);
      if (known(sub)) {
        found = std::move(sub);
        break;
      }
    }
    if (end == start) return std::nullopt;
    pieces.push_back(std::move(found));
    start = end;
  }
  return pieces;
}

}  // namespace lathe::data::detail
