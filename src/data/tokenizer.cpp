// Tokenizers from Hugging Face tokenizer.json (BPE, WordPiece; normalisers, pre-tokenizers,
// added tokens, post-processors, decoders), plus bytes and BERT's vocab.txt behind one interface.
#include "lathe/data/tokenizer.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <functional>
#include <mutex>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "lathe/core/error.h"
#include "lathe/data/text.h"
#include "read_file.h"
#include "wordpiece_greedy.h"

namespace lathe::data {

bool Tokenizer::is_special(int64_t id) const {
  for (const auto& t : added_tokens())
    if (t.id == id) return t.special;
  return false;
}

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- UTF-8 ----------------------------------------------------------------------------------

/// The code point at byte `i` of valid UTF-8 `s`; `len` gets its byte length.
char32_t code_point(std::string_view s, size_t i, size_t& len) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  len = detail::utf8_length(b(0));
  switch (len) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1Fu) << 6) | (b(1) & 0x3Fu);
    case 3: return ((b(0) & 0x0Fu) << 12) | ((b(1) & 0x3Fu) << 6) | (b(2) & 0x3Fu);
    default:
      return ((b(0) & 0x07u) << 18) | ((b(1) & 0x3Fu) << 12) | ((b(2) & 0x3Fu) << 6) |
             (b(3) & 0x3Fu);
  }
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

/// Calls fn(code_point, byte_offset, byte_length) for each code point of valid UTF-8 `s`.
template <class Fn>
void for_each_char(std::string_view s, Fn&& fn) {
  for (size_t i = 0, len = 0; i < s.size(); i += len) {
    const char32_t c = code_point(s, i, len);
    fn(c, i, len);
  }
}

/// `bytes` as UTF-8 with each maximal invalid subsequence replaced by U+FFFD (Rust's
/// String::from_utf8_lossy, which tokenizers' byte-level decoder uses).
std::string lossy_utf8(std::string_view bytes) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the range of the first continuation byte
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) need = 2;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    size_t k = 1;
    for (; need > 0 && k <= need && i + k < n; ++k) {
      const unsigned char b = p[i + k];
      const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
      if (!ok) break;
    }
    if (need > 0 && k == need + 1) {
      out.append(bytes.substr(i, need + 1));
      i += need + 1;
    } else {
      out += "\xEF\xBF\xBD";
      i += k;  // the lead and the continuation bytes that were still valid
    }
  }
  return out;
}

// ---- Unicode classes (as tokenizers' Rust code defines them) --------------------------------

bool is_white_space(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)) != 0; }

/// Rust regex's \w: Alphabetic, marks, decimal digits, connector punctuation, join controls.
bool is_word_char(char32_t c) {
  const auto u = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL))
    return true;
  switch (u_charType(u)) {
    case U_NON_SPACING_MARK:
    case U_COMBINING_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_DECIMAL_DIGIT_NUMBER:
    case U_CONNECTOR_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

/// Whether `c` was assigned by Unicode 8.0: tokenizers' BERT pieces take the general categories
/// from the unicode_categories crate, whose tables are Unicode 8.0's (a later character is no
/// control, punctuation or mark to them).
bool in_unicode_8(char32_t c) {
  UVersionInfo age;
  u_charAge(static_cast<UChar32>(c), age);
  return age[0] < 8 || (age[0] == 8 && age[1] == 0);
}

bool is_punctuation(char32_t c) {
  if (c < 0x80)
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
  if (!in_unicode_8(c)) return false;
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_CONNECTOR_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

bool is_numeric(char32_t c) {
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return true;
    default:
      return false;
  }
}

std::string to_utf8(const icu::UnicodeString& s) {
  std::string out;
  s.toUTF8String(out);
  return out;
}

icu::UnicodeString to_unicode(std::string_view s) {
  return icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
}

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

/// A character's full lower-case mapping, one character at a time (Rust's char::to_lowercase).
std::string lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for_each_char(s, [&](char32_t c, size_t, size_t) {
    if (c < 0x80) {
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
      return;
    }
    icu::UnicodeString u(static_cast<UChar32>(c));
    u.toLower(icu::Locale::getRoot());
    u.toUTF8String(out);
  });
  return out;
}

// ---- The tokenizer.json reader's error reporting -----------------------------------------

/// Reads one tokenizer.json: every accessor names the file and the dotted key in its error.
struct Reader {
  std::string origin;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw DataError(fmt::format("{}: {}: {}", origin, key, what));
  }
  const json& at(const json& obj, const std::string& key, const std::string& path) const {
    if (!obj.is_object()) fail(path, "expected an object");
    const auto it = obj.find(key);
    if (it == obj.end()) fail(path + "." + key, "missing");
    return *it;
  }
  std::string str(const json& obj, const std::string& key, const std::string& path) const {
    const json& v = at(obj, key, path);
    if (!v.is_string()) fail(path + "." + key, fmt::format("expected a string, got {}", v.type_name()));
    return v.get<std::string>();
  }
  std::string str_or(const json& obj, const std::string& key, const std::string& path,
                     const std::string& fallback) const {
    if (!obj.contains(key) || obj[key].is_null()) return fallback;
    return str(obj, key, path);
  }
  bool flag(const json& obj, const std::string& key, const std::string& path, bool fallback) const {
    if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return fallback;
    const json& v = obj[key];
    if (!v.is_boolean()) fail(path + "." + key, fmt::format("expected true or false, got {}", v.dump()));
    return v.get<bool>();
  }
  int64_t integer(const json& v, const std::string& path) const {
    if (!v.is_number_integer()) fail(path, fmt::format("expected an integer, got {}", v.dump()));
    return v.get<int64_t>();
  }
  int64_t id(const json& v, const std::string& path) const {
    const int64_t i = integer(v, path);
    if (i < 0 || i > (int64_t{1} << 31)) fail(path, fmt::format("token id {} out of range", i));
    return i;
  }
  const json& array(const json& obj, const std::string& key, const std::string& path) const {
    const json& v = at(obj, key, path);
    if (!v.is_array()) fail(path + "." + key, fmt::format("expected a list, got {}", v.type_name()));
    return v;
  }
  std::string type(const json& obj, const std::string& path) const {
    return str(obj, "type", path);
  }
  [[noreturn]] void unknown(const std::string& path, const std::string& type,
                            const char* known) const {
    fail(path + ".type", fmt::format("'{}' is not a type lathe reads (it reads {})", type, known));
  }
};

// ---- Regex (ICU) --------------------------------------------------------------------------

using Span = std::pair<size_t, size_t>;  // byte offsets [first, second)

class Regex {
 public:
  Regex(const std::string& pattern, const Reader& r, const std::string& key) {
    UErrorCode status = U_ZERO_ERROR;
    UParseError where{};
    pattern_.reset(icu::RegexPattern::compile(to_unicode(pattern), 0, where, status));
    if (U_FAILURE(status))
      r.fail(key, fmt::format("the regular expression '{}' does not compile ({} at offset {})",
                              pattern, u_errorName(status), where.offset));
  }
  /// Every match in `s`, left to right (empty ones included, as Oniguruma's find_iter).
  std::vector<Span> find_all(std::string_view s) const {
    const icu::UnicodeString u = to_unicode(s);
    std::vector<size_t> byte_at(static_cast<size_t>(u.length()) + 1, s.size());  // UTF-16 → byte
    int32_t unit = 0;
    for_each_char(s, [&](char32_t c, size_t offset, size_t) {
      byte_at[static_cast<size_t>(unit)] = offset;
      unit += c >= 0x10000 ? 2 : 1;
    });
    UErrorCode status = U_ZERO_ERROR;
    std::unique_ptr<icu::RegexMatcher> m(pattern_->matcher(u, status));
    m->setStackLimit(0, status);  // backtracking on the heap: long words do not overflow
    std::vector<Span> out;
    while (U_SUCCESS(status) && m->find(status)) {
      const int32_t a = m->start(status), b = m->end(status);
      if (U_FAILURE(status)) break;
      out.emplace_back(byte_at[static_cast<size_t>(a)], byte_at[static_cast<size_t>(b)]);
    }
    LATHE_CHECK(U_SUCCESS(status), DataError, "pre-tokenizing: the regular expression failed ({})",
                u_errorName(status));
    return out;
  }

 private:
  std::unique_ptr<icu::RegexPattern> pattern_;
};

// ---- Pieces of text between the stages -------------------------------------------------------

/// A stretch of the text on its way to the model: `added` is the id of the added token it is
/// (then the model does not see it), `at_start` whether it begins at the original text's start.
struct Piece {
  std::string text;
  bool at_start = false;
  int64_t added = -1;
};

enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

Behavior behavior_of(const std::string& name, const Reader& r, const std::string& key) {
  static const std::vector<std::pair<std::string, Behavior>> kNames = {
      {"Removed", Behavior::removed},
      {"Isolated", Behavior::isolated},
      {"MergedWithPrevious", Behavior::merged_with_previous},
      {"MergedWithNext", Behavior::merged_with_next},
      {"Contiguous", Behavior::contiguous}};
  for (const auto& [n, b] : kNames)
    if (n == name) return b;
  r.fail(key, fmt::format("'{}' is not a split behaviour (Removed, Isolated, MergedWithPrevious, "
                          "MergedWithNext, Contiguous)",
                          name));
}

/// Splits `in` at `matches` (sorted, non-overlapping) with `behavior`, as tokenizers'
/// NormalizedString::split; empty parts are dropped.
void split_piece(const Piece& in, const std::vector<Span>& matches, Behavior behavior, bool invert,
                 std::vector<Piece>& out) {
  std::vector<std::pair<Span, bool>> parts;  // (span, is_match)
  size_t prev = 0;
  const size_t n = in.text.size();
  if (n == 0) return;
  for (const auto& m : matches) {
    if (prev != m.first) parts.push_back({{prev, m.first}, invert});
    parts.push_back({m, !invert});
    prev = m.second;
  }
  if (prev != n) parts.push_back({{prev, n}, invert});
  std::vector<std::pair<Span, bool>> kept;  // (span, remove)
  bool previous_match = false;
  switch (behavior) {
    case Behavior::isolated:
      for (const auto& [s, m] : parts) kept.push_back({s, false});
      break;
    case Behavior::removed: kept = parts; break;
    case Behavior::contiguous:
      for (const auto& [s, m] : parts) {
        if (m == previous_match && !kept.empty()) kept.back().first.second = s.second;
        else kept.push_back({s, false});
        previous_match = m;
      }
      break;
    case Behavior::merged_with_previous:
      for (const auto& [s, m] : parts) {
        if (m && !previous_match && !kept.empty()) kept.back().first.second = s.second;
        else kept.push_back({s, false});
        previous_match = m;
      }
      break;
    case Behavior::merged_with_next:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->second && !previous_match && !kept.empty()) kept.back().first.first = it->first.first;
        else kept.push_back({it->first, false});
        previous_match = it->second;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  for (const auto& [s, remove] : kept) {
    if (remove || s.first == s.second) continue;
    out.push_back({in.text.substr(s.first, s.second - s.first), in.at_start && s.first == 0, -1});
  }
}

/// Each character for which `pred` holds is one match.
template <class Pred>
std::vector<Span> char_matches(std::string_view s, Pred&& pred) {
  std::vector<Span> out;
  for_each_char(s, [&](char32_t c, size_t i, size_t len) {
    if (pred(c)) out.emplace_back(i, i + len);
  });
  return out;
}

std::vector<Span> literal_matches(std::string_view s, std::string_view pattern) {
  std::vector<Span> out;
  if (pattern.empty()) return out;
  for (size_t at = s.find(pattern); at != std::string_view::npos;
       at = s.find(pattern, at + pattern.size()))
    out.emplace_back(at, at + pattern.size());
  return out;
}

/// A Split/Replace pattern: {"String": "..."} or {"Regex": "..."}.
struct Pattern {
  std::string literal;
  std::shared_ptr<Regex> regex;

  Pattern(const json& p, const Reader& r, const std::string& key) {
    if (p.is_object() && p.contains("String") && p["String"].is_string()) {
      literal = p["String"].get<std::string>();
    } else if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
      regex = std::make_shared<Regex>(p["Regex"].get<std::string>(), r, key + ".Regex");
    } else {
      r.fail(key, "expected {\"String\": ...} or {\"Regex\": ...}");
    }
  }
  std::vector<Span> find(std::string_view s) const {
    return regex ? regex->find_all(s) : literal_matches(s, literal);
  }
};

std::string replace_all(std::string_view s, const Pattern& p, std::string_view content) {
  std::string out;
  size_t prev = 0;
  for (const auto& [a, b] : p.find(s)) {
    out.append(s.substr(prev, a - prev));
    out.append(content);
    prev = b;
  }
  out.append(s.substr(prev));
  return out;
}

// ---- Normalisers ---------------------------------------------------------------------------

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};

class UnicodeForm : public Normalizer {
 public:
  explicit UnicodeForm(const std::string& form) {
    UErrorCode status = U_ZERO_ERROR;
    if (form == "NFC") n_ = icu::Normalizer2::getNFCInstance(status);
    else if (form == "NFD") n_ = icu::Normalizer2::getNFDInstance(status);
    else if (form == "NFKC") n_ = icu::Normalizer2::getNFKCInstance(status);
    else n_ = icu::Normalizer2::getNFKDInstance(status);
    LATHE_CHECK(U_SUCCESS(status) && n_ != nullptr, DataError, "ICU normaliser {} unavailable: {}",
                form, u_errorName(status));
  }
  void apply(std::string& s) const override {
    if (is_ascii(s)) return;
    UErrorCode status = U_ZERO_ERROR;
    const icu::UnicodeString out = n_->normalize(to_unicode(s), status);
    LATHE_CHECK(U_SUCCESS(status), DataError, "Unicode normalisation failed: {}",
                u_errorName(status));
    s = to_utf8(out);
  }

 private:
  const icu::Normalizer2* n_ = nullptr;
};

class Lowercase : public Normalizer {
 public:
  void apply(std::string& s) const override { s = lowercase(s); }
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string text) : text_(std::move(text)) {}
  void apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, text_);
  }

 private:
  std::string text_;
};

class Replace : public Normalizer {
 public:
  Replace(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void apply(std::string& s) const override { s = replace_all(s, pattern_, content_); }

 private:
  Pattern pattern_;
  std::string content_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void apply(std::string& s) const override {
    size_t a = 0, b = s.size();
    if (left_)
      while (a < b) {
        size_t len = 0;
        if (!is_white_space(code_point(s, a, len))) break;
        a += len;
      }
    if (right_)
      while (b > a) {
        size_t start = b - 1;
        while (start > a && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        size_t len = 0;
        if (!is_white_space(code_point(s, start, len))) break;
        b = start;
      }
    s = s.substr(a, b - a);
  }

 private:
  bool left_, right_;
};

/// tokenizers' BertNormalizer (its own character classes, which differ from transformers'
/// BertTokenizer at a few code points).
class BertNormalizer : public Normalizer {
 public:
  BertNormalizer(bool clean, bool chinese, bool strip_accents, bool lower)
      : clean_(clean), chinese_(chinese), strip_accents_(strip_accents), lower_(lower) {}
  void apply(std::string& s) const override {
    std::string out;
    out.reserve(s.size());
    for_each_char(s, [&](char32_t c, size_t i, size_t len) {
      if (clean_) {
        if (c == 0 || c == 0xFFFD || is_control(c)) return;
        if (c == '\t' || c == '\n' || c == '\r' || is_white_space(c)) {
          out += ' ';
          return;
        }
      }
      if (chinese_ && is_chinese(c)) {
        out += ' ';
        out.append(s, i, len);
        out += ' ';
        return;
      }
      out.append(s, i, len);
    });
    if (strip_accents_ && !is_ascii(out)) {
      UErrorCode status = U_ZERO_ERROR;
      const icu::UnicodeString nfd =
          icu::Normalizer2::getNFDInstance(status)->normalize(to_unicode(out), status);
      LATHE_CHECK(U_SUCCESS(status), DataError, "Unicode normalisation failed: {}",
                  u_errorName(status));
      icu::UnicodeString kept;
      for (int32_t i = 0; i < nfd.length(); i = nfd.moveIndex32(i, 1))
        if (u_charType(nfd.char32At(i)) != U_NON_SPACING_MARK ||
            !in_unicode_8(static_cast<char32_t>(nfd.char32At(i))))
          kept.append(nfd.char32At(i));
      out = to_utf8(kept);
    }
    if (lower_) out = lowercase(out);
    s = std::move(out);
  }

 private:
  static bool is_control(char32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return false;
    if (!in_unicode_8(c)) return false;
    switch (u_charType(static_cast<UChar32>(c))) {
      case U_CONTROL_CHAR:
      case U_FORMAT_CHAR:
      case U_PRIVATE_USE_CHAR:
        return true;
      default:
        return false;
    }
  }
  static bool is_chinese(char32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
  }
  bool clean_, chinese_, strip_accents_, lower_;
};

class NormalizerSequence : public Normalizer {
 public:
  explicit NormalizerSequence(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void apply(std::string& s) const override {
    for (const auto& n : steps_) n->apply(s);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

std::unique_ptr<Normalizer> read_normalizer(const json& j, const Reader& r, const std::string& key) {
  if (j.is_null()) return nullptr;
  const std::string type = r.type(j, key);
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD")
    return std::make_unique<UnicodeForm>(type);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Prepend") return std::make_unique<Prepend>(r.str(j, "prepend", key));
  if (type == "Replace")
    return std::make_unique<Replace>(Pattern(r.at(j, "pattern", key), r, key + ".pattern"),
                                     r.str(j, "content", key));
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(r.flag(j, "strip_left", key, true),
                                             r.flag(j, "strip_right", key, true));
  if (type == "BertNormalizer") {
    const bool lower = r.flag(j, "lowercase", key, true);
    return std::make_unique<BertNormalizer>(r.flag(j, "clean_text", key, true),
                                            r.flag(j, "handle_chinese_chars", key, true),
                                            r.flag(j, "strip_accents", key, lower), lower);
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    const json& list = r.array(j, "normalizers", key);
    for (size_t i = 0; i < list.size(); ++i) {
      auto n = read_normalizer(list[i], r, fmt::format("{}.normalizers[{}]", key, i));
      if (n) steps.push_back(std::move(n));
    }
    return std::make_unique<NormalizerSequence>(std::move(steps));
  }
  r.unknown(key, type, "NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, BertNormalizer, "
                       "Sequence");
}

// ---- Pre-tokenizers ------------------------------------------------------------------------

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  /// Appends the pieces `in` splits into to `out`.
  virtual void split(const Piece& in, std::vector<Piece>& out) const = 0;
};

/// The 256 bytes as the printable characters GPT-2's byte-level BPE writes them with.
const std::array<std::string, 256>& byte_chars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      append_utf8(t[static_cast<size_t>(b)],
                  printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++));
    }
    return t;
  }();
  return table;
}

/// The inverse of byte_chars(): code point → byte.
const std::unordered_map<char32_t, unsigned char>& char_bytes() {
  static const std::unordered_map<char32_t, unsigned char> table = [] {
    std::unordered_map<char32_t, unsigned char> t;
    for (int b = 0; b < 256; ++b) {
      size_t len = 0;
      t[code_point(byte_chars()[static_cast<size_t>(b)], 0, len)] = static_cast<unsigned char>(b);
    }
    return t;
  }();
  return table;
}

const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex, const Reader& r, const std::string& key)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_shared<Regex>(kGpt2Pattern, r, key);
  }
  void split(const Piece& in, std::vector<Piece>& out) const override {
    Piece p = in;
    if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
    std::vector<Piece> parts;
    if (regex_) split_piece(p, regex_->find_all(p.text), Behavior::isolated, false, parts);
    else if (!p.text.empty()) parts.push_back(p);
    const auto& table = byte_chars();
    for (auto& part : parts) {
      std::string mapped;
      mapped.reserve(part.text.size() * 2);
      for (const char c : part.text) mapped += table[static_cast<unsigned char>(c)];
      part.text = std::move(mapped);
      out.push_back(std::move(part));
    }
  }

 private:
  bool add_prefix_space_;
  std::shared_ptr<Regex> regex_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void split(const Piece& in, std::vector<Piece>& out) const override {
    split_piece(in, pattern_.find(in.text), behavior_, invert_, out);
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

class Metaspace : public PreTokenizer {
 public:
  enum class Prepend { always, first, never };
  Metaspace(std::string replacement, Prepend scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void split(const Piece& in, std::vector<Piece>& out) const override {
    Piece p = in;
    p.text.clear();
    for (const char c : in.text) {
      if (c == ' ') p.text += replacement_;
      else p.text += c;
    }
    const bool starts = p.text.compare(0, replacement_.size(), replacement_) == 0;
    if (!starts && (scheme_ == Prepend::always || (scheme_ == Prepend::first && in.at_start)))
      p.text.insert(0, replacement_);
    if (split_)
      split_piece(p, literal_matches(p.text, replacement_), Behavior::merged_with_next, false, out);
    else if (!p.text.empty())
      out.push_back(std::move(p));
  }

 private:
  std::string replacement_;
  Prepend scheme_;
  bool split_;
};

/// Splits at characters: those `removed` are dropped, those `isolated` become pieces of their own.
class CharSplit : public PreTokenizer {
 public:
  CharSplit(std::function<bool(char32_t)> pred, Behavior behavior)
      : pred_(std::move(pred)), behavior_(behavior) {}
  void split(const Piece& in, std::vector<Piece>& out) const override {
    split_piece(in, char_matches(in.text, pred_), behavior_, false, out);
  }

 private:
  std::function<bool(char32_t)> pred_;
  Behavior behavior_;
};

class RegexSplit : public PreTokenizer {  // Whitespace: keeps \w+ and [^\w\s]+ runs
 public:
  RegexSplit(std::shared_ptr<Regex> regex, Behavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  void split(const Piece& in, std::vector<Piece>& out) const override {
    split_piece(in, regex_->find_all(in.text), behavior_, invert_, out);
  }

 private:
  std::shared_ptr<Regex> regex_;
  Behavior behavior_;
  bool invert_;
};

class PreTokenizerSequence : public PreTokenizer {
 public:
  explicit PreTokenizerSequence(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void split(const Piece& in, std::vector<Piece>& out) const override {
    std::vector<Piece> cur{in}, next;
    for (const auto& step : steps_) {
      next.clear();
      for (const auto& p : cur) step->split(p, next);
      std::swap(cur, next);
    }
    for (auto& p : cur) out.push_back(std::move(p));
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

std::unique_ptr<PreTokenizer> read_pre_tokenizer(const json& j, const Reader& r,
                                                 const std::string& key) {
  if (j.is_null()) return nullptr;
  const std::string type = r.type(j, key);
  if (type == "ByteLevel")
    return std::make_unique<ByteLevel>(r.flag(j, "add_prefix_space", key, true),
                                       r.flag(j, "use_regex", key, true), r, key);
  if (type == "Split")
    return std::make_unique<SplitPreTokenizer>(
        Pattern(r.at(j, "pattern", key), r, key + ".pattern"),
        behavior_of(r.str(j, "behavior", key), r, key + ".behavior"),
        r.flag(j, "invert", key, false));
  if (type == "Metaspace") {
    const std::string rep = r.str(j, "replacement", key);
    if (detail::utf8_count(rep) != 1) r.fail(key + ".replacement", "expected one character");
    Metaspace::Prepend scheme = r.flag(j, "add_prefix_space", key, true)
                                    ? Metaspace::Prepend::always
                                    : Metaspace::Prepend::never;
    if (j.contains("prepend_scheme")) {
      const std::string s = r.str(j, "prepend_scheme", key);
      if (s == "always") scheme = Metaspace::Prepend::always;
      else if (s == "first") scheme = Metaspace::Prepend::first;
      else if (s == "never") scheme = Metaspace::Prepend::never;
      else r.fail(key + ".prepend_scheme", fmt::format("'{}' is not always, first or never", s));
    }
    return std::make_unique<Metaspace>(rep, scheme, r.flag(j, "split", key, true));
  }
  if (type == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    steps.push_back(std::make_unique<CharSplit>(is_white_space, Behavior::removed));
    steps.push_back(std::make_unique<CharSplit>(is_punctuation, Behavior::isolated));
    return std::make_unique<PreTokenizerSequence>(std::move(steps));
  }
  if (type == "WhitespaceSplit")
    return std::make_unique<CharSplit>(is_white_space, Behavior::removed);
  if (type == "Whitespace")
    return std::make_unique<RegexSplit>(std::make_shared<Regex>(R"(\w+|[^\w\s]+)", r, key),
                                        Behavior::removed, true);
  if (type == "Punctuation")
    return std::make_unique<CharSplit>(
        is_punctuation, behavior_of(r.str_or(j, "behavior", key, "Isolated"), r, key + ".behavior"));
  if (type == "Digits")
    return std::make_unique<CharSplit>(is_numeric, r.flag(j, "individual_digits", key, false)
                                                       ? Behavior::isolated
                                                       : Behavior::contiguous);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    const json& list = r.array(j, "pretokenizers", key);
    for (size_t i = 0; i < list.size(); ++i) {
      auto p = read_pre_tokenizer(list[i], r, fmt::format("{}.pretokenizers[{}]", key, i));
      if (p) steps.push_back(std::move(p));
    }
    return std::make_unique<PreTokenizerSequence>(std::move(steps));
  }
  r.unknown(key, type, "ByteLevel, Split, Metaspace, BertPreTokenizer, Whitespace, "
                       "WhitespaceSplit, Punctuation, Digits, Sequence");
}

// ---- Models --------------------------------------------------------------------------------

/// The model's vocabulary: token ↔ id.
struct Vocabulary {
  std::unordered_map<std::string, int64_t> ids;
  std::vector<std::string> tokens;  // by id ("" where no token has the id)
  std::vector<bool> present;

  std::optional<int64_t> find(std::string_view t) const {
    const auto it = ids.find(std::string(t));
    if (it == ids.end()) return std::nullopt;
    return it->second;
  }
  void read(const json& v, const Reader& r, const std::string& key) {
    if (!v.is_object()) r.fail(key, fmt::format("expected an object of token: id, got {}", v.type_name()));
    for (const auto& [token, id_json] : v.items()) {
      const int64_t id = r.id(id_json, fmt::format("{}[\"{}\"]", key, token));
      ids[token] = id;
      if (tokens.size() <= static_cast<size_t>(id)) {
        tokens.resize(static_cast<size_t>(id) + 1);
        present.resize(static_cast<size_t>(id) + 1, false);
      }
      tokens[static_cast<size_t>(id)] = token;
      present[static_cast<size_t>(id)] = true;
    }
  }
  const std::string* token(int64_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= tokens.size() || !present[static_cast<size_t>(id)])
      return nullptr;
    return &tokens[static_cast<size_t>(id)];
  }
};

class Model {
 public:
  virtual ~Model() = default;
  /// Appends the ids of one pre-tokenized word.
  virtual void tokenize(const std::string& word, std::vector<int64_t>& out) const = 0;
  const Vocabulary& vocab() const { return vocab_; }

 protected:
  Vocabulary vocab_;
};

class Bpe : public Model {
 public:
  Bpe(const json& j, const Reader& r, const std::string& key) {
    vocab_.read(r.at(j, "vocab", key), r, key + ".vocab");
    if (j.contains("dropout") && !j["dropout"].is_null() &&
        !(j["dropout"].is_number() && j["dropout"].get<double>() == 0.0))
      r.fail(key + ".dropout", "BPE dropout (random merges) is a training-time option lathe "
                               "does not apply; set it to null");
    byte_fallback_ = r.flag(j, "byte_fallback", key, false);
    fuse_unk_ = r.flag(j, "fuse_unk", key, false);
    ignore_merges_ = r.flag(j, "ignore_merges", key, false);
    prefix_ = r.str_or(j, "continuing_subword_prefix", key, "");
    suffix_ = r.str_or(j, "end_of_word_suffix", key, "");
    const std::string unk = r.str_or(j, "unk_token", key, "");
    if (!unk.empty()) {
      const auto id = vocab_.find(unk);
      if (!id) r.fail(key + ".unk_token", fmt::format("'{}' is not in the vocabulary", unk));
      unk_ = *id;
    }
    const json& merges = r.array(j, "merges", key);
    merges_.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string where = fmt::format("{}.merges[{}]", key, i);
      std::string a, b;
      if (merges[i].is_string()) {  // "a b"
        const std::string m = merges[i].get<std::string>();
        const size_t space = m.find(' ');
        if (space == std::string::npos || m.find(' ', space + 1) != std::string::npos)
          r.fail(where, fmt::format("'{}' is not two tokens separated by one space", m));
        a = m.substr(0, space);
        b = m.substr(space + 1);
      } else if (merges[i].is_array() && merges[i].size() == 2 && merges[i][0].is_string() &&
                 merges[i][1].is_string()) {
        a = merges[i][0].get<std::string>();
        b = merges[i][1].get<std::string>();
      } else {
        r.fail(where, fmt::format("expected \"a b\" or [\"a\", \"b\"], got {}", merges[i].dump()));
      }
      const auto ia = vocab_.find(a), ib = vocab_.find(b);
      if (!ia) r.fail(where, fmt::format("the merge names '{}', which is not in the vocabulary", a));
      if (!ib) r.fail(where, fmt::format("the merge names '{}', which is not in the vocabulary", b));
      std::string joined = a + (prefix_.empty() || b.rfind(prefix_, 0) != 0 ? b : b.substr(prefix_.size()));
      const auto ij = vocab_.find(joined);
      if (!ij)
        r.fail(where, fmt::format("the merged token '{}' is not in the vocabulary", joined));
      merges_[key_of(*ia, *ib)] = {static_cast<int64_t>(i), *ij};
    }
  }

  void tokenize(const std::string& word, std::vector<int64_t>& out) const override {
    if (word.empty()) return;
    if (ignore_merges_) {
      if (const auto id = vocab_.find(word)) {
        out.push_back(*id);
        return;
      }
    }
    {
      const std::lock_guard<std::mutex> lock(cache_mutex_);
      const auto it = cache_.find(word);
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int64_t> ids = merge_word(word);
    out.insert(out.end(), ids.begin(), ids.end());
    if (word.size() < 256) {
      const std::lock_guard<std::mutex> lock(cache_mutex_);
      if (cache_.size() < 10000) cache_.emplace(word, std::move(ids));
    }
  }

 private:
  static uint64_t key_of(int64_t a, int64_t b) {
    return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b);
  }
  struct Symbol {
    int64_t id;
    int64_t prev, next;  // neighbours (-1 = none)
    bool alive;
  };
  struct Candidate {
    int64_t rank, pos, new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };

  /// The word's characters as symbols (byte fallback and unknown tokens as tokenizers' BPE),
  /// then the lowest-ranked adjacent pair merged, leftmost first, until no pair merges: a heap
  /// of candidates over a linked list, O(n log n) in the word's length.
  std::vector<int64_t> merge_word(const std::string& word) const {
    std::vector<Symbol> sym;
    std::optional<int64_t> unk_pending;
    const auto push = [&](int64_t id) {
      sym.push_back({id, static_cast<int64_t>(sym.size()) - 1, -1, true});
    };
    const auto flush_unk = [&] {
      if (unk_pending) push(*unk_pending);
      unk_pending.reset();
    };
    std::string s;
    for_each_char(word, [&](char32_t, size_t i, size_t len) {
      s.assign(word, i, len);
      if (i > 0 && !prefix_.empty()) s.insert(0, prefix_);
      if (i + len == word.size() && !suffix_.empty()) s += suffix_;
      if (const auto id = vocab_.find(s)) {
        flush_unk();
        push(*id);
        return;
      }
      if (byte_fallback_) {
        std::vector<int64_t> bytes;
        for (const char c : s) {
          const auto id = vocab_.find(fmt::format("<0x{:02X}>", static_cast<unsigned char>(c)));
          if (!id) break;
          bytes.push_back(*id);
        }
        if (bytes.size() == s.size()) {
          for (int64_t id : bytes) push(id);  // (no pending unknown is flushed: as tokenizers)
          return;
        }
      }
      if (unk_) {
        if (unk_pending && !fuse_unk_) flush_unk();
        if (!unk_pending) unk_pending = *unk_;
      }
    });
    flush_unk();
    for (size_t i = 0; i + 1 < sym.size(); ++i) sym[i].next = static_cast<int64_t>(i) + 1;

    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
    const auto consider = [&](int64_t pos) {
      const int64_t next = sym[static_cast<size_t>(pos)].next;
      if (next < 0) return;
      const auto it = merges_.find(key_of(sym[static_cast<size_t>(pos)].id, sym[static_cast<size_t>(next)].id));
      if (it != merges_.end()) queue.push({it->second.first, pos, it->second.second});
    };
    for (size_t i = 0; i + 1 < sym.size(); ++i) consider(static_cast<int64_t>(i));
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      Symbol& left = sym[static_cast<size_t>(top.pos)];
      if (!left.alive || left.next < 0) continue;
      Symbol& right = sym[static_cast<size_t>(left.next)];
      const auto it = merges_.find(key_of(left.id, right.id));
      if (it == merges_.end() || it->second.second != top.new_id) continue;  // stale entry
      left.id = top.new_id;
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = top.pos;
      if (left.prev >= 0) consider(left.prev);
      consider(top.pos);
    }
    std::vector<int64_t> ids;
    for (const auto& x : sym)
      if (x.alive) ids.push_back(x.id);
    return ids;
  }

  std::unordered_map<uint64_t, std::pair<int64_t, int64_t>> merges_;  // pair → (rank, new id)
  std::optional<int64_t> unk_;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;
};

class WordPieceModel : public Model {
 public:
  WordPieceModel(const json& j, const Reader& r, const std::string& key) {
    vocab_.read(r.at(j, "vocab", key), r, key + ".vocab");
    const std::string unk = r.str(j, "unk_token", key);
    const auto id = vocab_.find(unk);
    if (!id) r.fail(key + ".unk_token", fmt::format("'{}' is not in the vocabulary", unk));
    unk_ = *id;
    prefix_ = r.str_or(j, "continuing_subword_prefix", key, "##");
    max_chars_ = j.contains("max_input_chars_per_word")
                     ? r.integer(j["max_input_chars_per_word"], key + ".max_input_chars_per_word")
                     : 100;
  }
  void tokenize(const std::string& word, std::vector<int64_t>& out) const override {
    if (static_cast<int64_t>(detail::utf8_count(word)) > max_chars_) {
      out.push_back(unk_);
      return;
    }
    const auto pieces = detail::wordpiece_greedy(
        word, prefix_, [&](const std::string& s) { return vocab_.ids.count(s) != 0; });
    if (!pieces) {
      out.push_back(unk_);
      return;
    }
    for (const auto& p : *pieces) out.push_back(vocab_.ids.at(p));
  }

 private:
  int64_t unk_ = 0, max_chars_ = 100;
  std::string prefix_;
};

// ---- Post-processors -----------------------------------------------------------------------

/// The ids a post-processor puts around one sequence.
struct Around {
  std::vector<int64_t> before, after;
};

Around read_post_processor(const json& j, const Reader& r, const std::string& key) {
  Around out;
  if (j.is_null()) return out;
  const std::string type = r.type(j, key);
  const auto pair_id = [&](const char* name) {
    const json& v = r.at(j, name, key);
    if (!v.is_array() || v.size() != 2) r.fail(key + "." + name, "expected [token, id]");
    return r.id(v[1], fmt::format("{}.{}[1]", key, name));
  };
  if (type == "TemplateProcessing") {
    const json& single = r.array(j, "single", key);
    const json& specials = r.at(j, "special_tokens", key);
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string where = fmt::format("{}.single[{}]", key, i);
      if (single[i].is_object() && single[i].contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!single[i].is_object() || !single[i].contains("SpecialToken"))
        r.fail(where, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
      const std::string name = r.str(single[i]["SpecialToken"], "id", where + ".SpecialToken");
      const json& entry = r.at(specials, name, key + ".special_tokens");
      const json& ids = r.array(entry, "ids", key + ".special_tokens." + name);
      for (size_t k = 0; k < ids.size(); ++k)
        (seen_sequence ? out.after : out.before)
            .push_back(r.id(ids[k], fmt::format("{}.special_tokens.{}.ids[{}]", key, name, k)));
    }
    return out;
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    out.before.push_back(pair_id("cls"));
    out.after.push_back(pair_id("sep"));
    return out;
  }
  if (type == "ByteLevel") return out;
  if (type == "Sequence") {
    const json& list = r.array(j, "processors", key);
    for (size_t i = 0; i < list.size(); ++i) {
      const Around a = read_post_processor(list[i], r, fmt::format("{}.processors[{}]", key, i));
      out.before.insert(out.before.begin(), a.before.begin(), a.before.end());
      out.after.insert(out.after.end(), a.after.begin(), a.after.end());
    }
    return out;
  }
  r.unknown(key, type, "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence");
}

// ---- Decoders ------------------------------------------------------------------------------

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

class ByteLevelDecoder : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string bytes;
    const auto& table = char_bytes();
    for (const auto& t : tokens) {
      std::string mine;
      bool all = true;
      for_each_char(t, [&](char32_t c, size_t, size_t) {
        const auto it = table.find(c);
        if (it == table.end()) all = false;
        else mine += static_cast<char>(it->second);
      });
      bytes += all ? mine : t;
    }
    tokens = {lossy_utf8(bytes)};
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool drop_first)
      : replacement_(std::move(replacement)), drop_first_(drop_first) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      for (size_t k = 0; k < tokens[i].size();) {
        if (tokens[i].compare(k, replacement_.size(), replacement_) == 0) {
          if (!(i == 0 && drop_first_)) out += ' ';
          k += replacement_.size();
        } else {
          out += tokens[i][k++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool drop_first_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern p, std::string content) : p_(std::move(p)), content_(std::move(content)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = replace_all(t, p_, content_);
  }

 private:
  Pattern p_;
  std::string content_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    const auto flush = [&] {
      if (pending.empty()) return;
      size_t bad = 0;
      if (valid_utf8(pending, bad)) out.push_back(pending);
      else
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (auto& t : tokens) {
      const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex(t[3]) && hex(t[4])) {
        pending += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens = {all};
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, int64_t start, int64_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<std::pair<char32_t, Span>> chars;
      for_each_char(t, [&](char32_t c, size_t i, size_t len) { chars.push_back({c, {i, i + len}}); });
      size_t a = 0, b = chars.size();
      for (int64_t k = 0; k < start_ && a < b && chars[a].first == content_; ++k) ++a;
      for (int64_t k = 0; k < stop_ && b > a && chars[b - 1].first == content_; ++k) --b;
      const size_t from = a < chars.size() ? chars[a].second.first : t.size();
      const size_t to = b > 0 ? chars[b - 1].second.second : 0;
      t = to > from ? t.substr(from, to - from) : std::string();
    }
  }

 private:
  char32_t content_;
  int64_t start_, stop_;
};

class WordPieceDecoder : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i != 0) {
        if (t.rfind(prefix_, 0) == 0) t = t.substr(prefix_.size());
        else t.insert(0, " ");
      }
      if (cleanup_) t = cleanup(t);
    }
  }
  /// transformers' clean_up_tokenization: spaces before punctuation and contractions dropped.
  static std::string cleanup(std::string s) {
    static const std::vector<std::pair<std::string, std::string>> kRules = {
        {" .", "."},   {" ?", "?"},     {" !", "!"},     {" ,", ","},     {" ' ", "'"},  {" n't", "n't"},
        {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : kRules) {
      std::string out;
      size_t prev = 0;
      for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, prev)) {
        out.append(s, prev, at - prev);
        out += to;
        prev = at + from.size();
      }
      out.append(s, prev);
      s = std::move(out);
    }
    return s;
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class BpeDecoder : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string with = i + 1 == tokens.size() ? "" : " ";
      std::string out;
      size_t prev = 0;
      for (size_t at = tokens[i].find(suffix_); !suffix_.empty() && at != std::string::npos;
           at = tokens[i].find(suffix_, prev)) {
        out.append(tokens[i], prev, at - prev);
        out += with;
        prev = at + suffix_.size();
      }
      out.append(tokens[i], prev);
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string suffix_;
};

class DecoderSequence : public Decoder {
 public:
  explicit DecoderSequence(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& d : steps_) d->apply(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

std::unique_ptr<Decoder> read_decoder(const json& j, const Reader& r, const std::string& key) {
  if (j.is_null()) return nullptr;
  const std::string type = r.type(j, key);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    bool drop_first = r.flag(j, "add_prefix_space", key, true);
    if (j.contains("prepend_scheme")) drop_first = r.str(j, "prepend_scheme", key) != "never";
    return std::make_unique<MetaspaceDecoder>(r.str(j, "replacement", key), drop_first);
  }
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(Pattern(r.at(j, "pattern", key), r, key + ".pattern"),
                                            r.str(j, "content", key));
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const std::string c = r.str(j, "content", key);
    if (detail::utf8_count(c) != 1) r.fail(key + ".content", "expected one character");
    size_t len = 0;
    return std::make_unique<StripDecoder>(code_point(c, 0, len), r.integer(r.at(j, "start", key), key + ".start"),
                                          r.integer(r.at(j, "stop", key), key + ".stop"));
  }
  if (type == "WordPiece")
    return std::make_unique<WordPieceDecoder>(r.str_or(j, "prefix", key, "##"),
                                              r.flag(j, "cleanup", key, true));
  if (type == "BPEDecoder") return std::make_unique<BpeDecoder>(r.str_or(j, "suffix", key, "</w>"));
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    const json& list = r.array(j, "decoders", key);
    for (size_t i = 0; i < list.size(); ++i) {
      auto d = read_decoder(list[i], r, fmt::format("{}.decoders[{}]", key, i));
      if (d) steps.push_back(std::move(d));
    }
    return std::make_unique<DecoderSequence>(std::move(steps));
  }
  r.unknown(key, type, "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, WordPiece, "
                       "BPEDecoder, Sequence");
}

// ---- Added tokens --------------------------------------------------------------------------

/// Finds added tokens in text, leftmost first and longest among those starting there (as the
/// Aho-Corasick automaton tokenizers builds), with their single_word / lstrip / rstrip rules.
class AddedMatcher {
 public:
  void add(const AddedToken* t, const std::string& pattern) {
    if (pattern.empty()) return;
    size_t node = 0;
    for (const char c : pattern) {
      const auto it = nodes_[node].next.find(c);
      if (it != nodes_[node].next.end()) {
        node = it->second;
      } else {
        nodes_.emplace_back();
        nodes_[node].next[c] = nodes_.size() - 1;
        node = nodes_.size() - 1;
      }
    }
    nodes_[node].token = t;
  }
  bool empty() const { return nodes_.size() == 1; }

  /// Splits `in` into added-token pieces and the text between them.
  void split(const Piece& in, std::vector<Piece>& out) const {
    const std::string& s = in.text;
    size_t offset = 0;  // where the current text piece starts
    size_t scan = 0;    // where the search continues
    const auto emit_text = [&](size_t a, size_t b) {
      if (b > a) out.push_back({s.substr(a, b - a), in.at_start && a == 0, -1});
    };
    while (scan < s.size()) {
      size_t start = s.size(), len = 0;
      const AddedToken* token = nullptr;
      for (size_t i = scan; i < s.size() && token == nullptr; ++i) {
        size_t node = 0;  // walk the trie from i; keep the longest token seen
        for (size_t k = i; k < s.size(); ++k) {
          const auto it = nodes_[node].next.find(s[k]);
          if (it == nodes_[node].next.end()) break;
          node = it->second;
          if (nodes_[node].token != nullptr) start = i, len = k + 1 - i, token = nodes_[node].token;
        }
      }
      if (token == nullptr) break;
      size_t a = start, b = start + len;
      scan = b;
      if (token->single_word) {
        const bool left_ok = a == 0 || !is_word_char(last_char(s, a));
        size_t clen = 0;
        const bool right_ok = b == s.size() || !is_word_char(code_point(s, b, clen));
        if (!left_ok || !right_ok) continue;
      }
      if (token->lstrip) {
        size_t k = a;
        while (k > 0) {
          size_t from = k - 1;
          while (from > 0 && (static_cast<unsigned char>(s[from]) & 0xC0) == 0x80) --from;
          size_t clen = 0;
          if (!is_white_space(code_point(s, from, clen))) break;
          k = from;
        }
        a = std::max(k, offset);
      }
      if (token->rstrip) {
        while (b < s.size()) {
          size_t clen = 0;
          if (!is_white_space(code_point(s, b, clen))) break;
          b += clen;
        }
      }
      emit_text(offset, a);
      out.push_back({s.substr(a, b - a), in.at_start && a == 0, token->id});
      offset = b;
      scan = std::max(scan, b);
    }
    emit_text(offset, s.size());
  }

 private:
  static char32_t last_char(const std::string& s, size_t end) {
    size_t from = end - 1;
    while (from > 0 && (static_cast<unsigned char>(s[from]) & 0xC0) == 0x80) --from;
    size_t len = 0;
    return code_point(s, from, len);
  }
  struct Node {
    std::unordered_map<char, size_t> next;
    const AddedToken* token = nullptr;
  };
  std::vector<Node> nodes_ = std::vector<Node>(1);  // the root first
};

// ---- The tokenizer.json tokenizer ------------------------------------------------------------

/// The well-known names of the special tokens, in order of preference, when no
/// tokenizer_config.json names them.
const std::vector<std::string> kBosNames = {"<|begin_of_text|>", "<s>", "[CLS]", "<|im_start|>"};
const std::vector<std::string> kEosNames = {"<|end_of_text|>", "<|endoftext|>", "</s>",
                                            "<|eot_id|>", "[SEP]", "<|im_end|>"};
const std::vector<std::string> kPadNames = {"<pad>", "[PAD]", "<|pad|>", "<|padding|>"};
const std::vector<std::string> kUnkNames = {"<unk>", "[UNK]", "<|unk|>"};

class JsonTokenizer : public Tokenizer {
 public:
  JsonTokenizer(std::string_view text, const std::string& origin, std::string_view config) {
    origin_ = origin;
    const Reader r{origin};
    json j;
    try {
      j = json::parse(text);
    } catch (const json::parse_error& e) {
      throw DataError(fmt::format("{}: not valid JSON (byte {}); a tokenizer.json is the JSON "
                                  "file transformers' save_pretrained writes",
                                  origin, e.byte));
    }
    if (!j.is_object()) r.fail("(top level)", "expected a JSON object");
    const json& model = r.at(j, "model", "tokenizer");
    // Older files leave the type out of the model when it is BPE (merges present).
    std::string type = model.is_object() && model.contains("type")
                           ? r.str(model, "type", "model")
                           : (model.is_object() && model.contains("merges") ? "BPE" : "");
    if (type == "BPE") {
      model_ = std::make_unique<Bpe>(model, r, "model");
      kind_ = "bpe";
    } else if (type == "WordPiece") {
      model_ = std::make_unique<WordPieceModel>(model, r, "model");
      kind_ = "wordpiece";
    } else {
      r.fail("model.type", fmt::format("'{}' is not a model lathe reads (it reads BPE and "
                                       "WordPiece)",
                                       type));
    }
    normalizer_ = read_normalizer(j.value("normalizer", json()), r, "normalizer");
    pre_tokenizer_ = read_pre_tokenizer(j.value("pre_tokenizer", json()), r, "pre_tokenizer");
    around_ = read_post_processor(j.value("post_processor", json()), r, "post_processor");
    decoder_ = read_decoder(j.value("decoder", json()), r, "decoder");

    vocab_size_ = static_cast<int64_t>(model_->vocab().tokens.size());
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      const json& list = r.array(j, "added_tokens", "tokenizer");
      for (size_t i = 0; i < list.size(); ++i) {
        const std::string key = fmt::format("added_tokens[{}]", i);
        AddedToken t;
        t.id = r.id(r.at(list[i], "id", key), key + ".id");
        t.content = r.str(list[i], "content", key);
        size_t bad = 0;
        if (!valid_utf8(t.content, bad)) r.fail(key + ".content", "not valid UTF-8");
        t.special = r.flag(list[i], "special", key, false);
        t.single_word = r.flag(list[i], "single_word", key, false);
        t.lstrip = r.flag(list[i], "lstrip", key, false);
        t.rstrip = r.flag(list[i], "rstrip", key, false);
        t.normalized = r.flag(list[i], "normalized", key, !t.special);
        added_.push_back(std::move(t));
        vocab_size_ = std::max(vocab_size_, added_.back().id + 1);
      }
    }
    for (const auto& t : added_) {
      added_ids_[t.content] = t.id;
      added_tokens_[t.id] = &t;
      if (t.content.empty()) continue;
      if (t.normalized) {
        std::string pattern = t.content;
        if (normalizer_) normalizer_->apply(pattern);
        // Decoding writes a normalised added token as it was matched, so the decoder inverts
        // the normaliser (tokenizers' simple_id_to_token).
        if (pattern != t.content) decode_as_[t.id] = pattern;
        normalized_patterns_.push_back(std::move(pattern));
      }
    }
    size_t k = 0;
    for (const auto& t : added_) {
      if (t.content.empty()) continue;
      if (t.normalized) normalized_.add(&t, normalized_patterns_[k++]);
      else raw_.add(&t, t.content);
    }
    read_special_ids(config);
  }

  std::string kind() const override { return kind_; }
  int64_t vocab_size() const override { return vocab_size_; }
  const std::vector<AddedToken>& added_tokens() const override { return added_; }

  std::optional<int64_t> token_to_id(std::string_view token) const override {
    const auto it = added_ids_.find(std::string(token));
    if (it != added_ids_.end()) return it->second;
    return model_->vocab().find(token);
  }
  std::string id_to_token(int64_t id) const override {
    const auto it = added_tokens_.find(id);
    if (it != added_tokens_.end()) return it->second->content;
    const std::string* t = model_->vocab().token(id);
    LATHE_CHECK(t != nullptr, DataError, "{}: no token has id {} (vocabulary size {})", origin_, id,
                vocab_size_);
    return *t;
  }

  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens,
                              std::string_view where) const override {
    size_t bad = 0;
    LATHE_CHECK(valid_utf8(text, bad), DataError,
                "{}: not valid UTF-8 (byte {}); tokenizers read UTF-8 text", where, bad + 1);
    std::vector<Piece> pieces, next;
    const Piece all{std::string(text), true, -1};
    if (raw_.empty()) pieces.push_back(all);
    else raw_.split(all, pieces);
    // The text between the raw added tokens is normalised, then split at the normalised ones.
    for (auto& p : pieces) {
      if (p.added >= 0) {
        next.push_back(std::move(p));
        continue;
      }
      if (normalizer_) normalizer_->apply(p.text);
      if (p.text.empty()) continue;
      if (normalized_.empty()) next.push_back(std::move(p));
      else normalized_.split(p, next);
    }
    std::vector<int64_t> ids;
    if (add_special_tokens) ids = around_.before;
    std::vector<Piece> words;
    for (const auto& p : next) {
      if (p.added >= 0) {
        ids.push_back(p.added);
        continue;
      }
      words.clear();
      if (pre_tokenizer_) pre_tokenizer_->split(p, words);
      else words.push_back(p);
      for (const auto& w : words) model_->tokenize(w.text, ids);
    }
    if (add_special_tokens) ids.insert(ids.end(), around_.after.begin(), around_.after.end());
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const int64_t id : ids) {
      const auto it = added_tokens_.find(id);
      if (it != added_tokens_.end()) {
        if (!(skip_special_tokens && it->second->special))
          tokens.push_back(decode_as_.count(id) ? decode_as_.at(id) : it->second->content);
        continue;
      }
      const std::string* t = model_->vocab().token(id);
      LATHE_CHECK(t != nullptr, DataError,
                  "decoding with {}: no token has id {} (vocabulary size {})", origin_, id,
                  vocab_size_);
      // A model token that is also a special added token's content is skipped as one.
      if (skip_special_tokens) {
        const auto a = added_ids_.find(*t);
        if (a != added_ids_.end() && added_tokens_.at(a->second)->special) continue;
      }
      tokens.push_back(*t);
    }
    if (!decoder_) {
      std::string out;
      for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
      return out;
    }
    decoder_->apply(tokens);
    std::string out;
    for (const auto& t : tokens) out += t;
    return out;
  }

 private:
  void read_special_ids(std::string_view config) {
    const auto first_known = [&](const std::vector<std::string>& names) -> std::optional<int64_t> {
      for (const auto& n : names)
        if (const auto it = added_ids_.find(n); it != added_ids_.end()) return it->second;
      return std::nullopt;
    };
    special_.bos = first_known(kBosNames);
    special_.eos = first_known(kEosNames);
    special_.pad = first_known(kPadNames);
    special_.unk = first_known(kUnkNames);
    if (config.empty()) return;
    const std::string where = origin_ + " (tokenizer_config.json)";
    const Reader r{where};
    json c;
    try {
      c = json::parse(config);
    } catch (const json::parse_error& e) {
      throw DataError(fmt::format("{}: not valid JSON (byte {})", where, e.byte));
    }
    if (!c.is_object()) r.fail("(top level)", "expected a JSON object");
    const auto named = [&](const char* key, std::optional<int64_t>& slot) {
      if (!c.contains(key)) return;
      const json& v = c[key];
      if (v.is_null()) {
        slot.reset();
        return;
      }
      std::string name;
      if (v.is_string()) name = v.get<std::string>();
      else if (v.is_object() && v.contains("content") && v["content"].is_string())
        name = v["content"].get<std::string>();
      else r.fail(key, fmt::format("expected a token string, got {}", v.dump()));
      const auto id = token_to_id(name);
      if (!id) r.fail(key, fmt::format("'{}' is not a token of {}", name, origin_));
      slot = id;
    };
    named("bos_token", special_.bos);
    named("eos_token", special_.eos);
    named("pad_token", special_.pad);
    named("unk_token", special_.unk);
  }

  std::string kind_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  Around around_;
  std::vector<AddedToken> added_;
  std::vector<std::string> normalized_patterns_;
  std::unordered_map<std::string, int64_t> added_ids_;
  std::unordered_map<int64_t, const AddedToken*> added_tokens_;
  std::unordered_map<int64_t, std::string> decode_as_;
  AddedMatcher raw_, normalized_;
  int64_t vocab_size_ = 0;
};

// ---- Bytes and vocab.txt -----------------------------------------------------------------------

class ByteTokenizer : public Tokenizer {
 public:
  ByteTokenizer() { origin_ = "bytes"; }
  std::string kind() const override { return "bytes"; }
  std::vector<int64_t> encode(std::string_view text, bool, std::string_view) const override {
    std::vector<int64_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids, bool) const override {
    std::string out;
    for (const int64_t id : ids) {
      LATHE_CHECK(id >= 0 && id < 256, DataError, "decoding bytes: id {} is not a byte (0..255)", id);
      out += static_cast<char>(id);
    }
    return out;
  }
  int64_t vocab_size() const override { return 256; }
  std::optional<int64_t> token_to_id(std::string_view token) const override {
    if (token.size() != 1) return std::nullopt;
    return static_cast<unsigned char>(token[0]);
  }
  std::string id_to_token(int64_t id) const override {
    LATHE_CHECK(id >= 0 && id < 256, DataError, "bytes: id {} is not a byte (0..255)", id);
    return std::string(1, static_cast<char>(id));
  }
  const std::vector<AddedToken>& added_tokens() const override { return none_; }

 private:
  std::vector<AddedToken> none_;
};

/// BERT's vocab.txt WordPiece (text.h's WordPiece, with BertTokenizer's rules) behind the
/// interface; decoding as BertTokenizer.decode (## joined, spaces before punctuation cleaned).
class VocabWordPiece : public Tokenizer {
 public:
  explicit VocabWordPiece(const fs::path& file) : wp_(file) {
    origin_ = file.string();
    for (const char* name : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
      const int64_t id = wp_.token_id(name);
      if (wp_.token(id) == name) added_.push_back({id, name, true, false, false, false, false});
    }
    special_.bos = wp_.cls_id();
    special_.eos = wp_.sep_id();
    special_.pad = wp_.pad_id();
    special_.unk = wp_.unk_id();
  }
  std::string kind() const override { return "wordpiece"; }
  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens,
                              std::string_view where) const override {
    size_t bad = 0;
    LATHE_CHECK(valid_utf8(text, bad), DataError, "{}: not valid UTF-8 (byte {})", where, bad + 1);
    if (add_special_tokens) return wp_.encode(text, 0, false).ids;
    std::vector<int64_t> ids;
    for (const auto& t : wp_.tokenize(text)) ids.push_back(wp_.token_id(t));
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    for (const int64_t id : ids) {
      LATHE_CHECK(id >= 0 && id < wp_.vocab_size(), DataError,
                  "decoding with {}: no token has id {} (vocabulary size {})", origin_, id,
                  wp_.vocab_size());
      if (skip_special_tokens && is_special(id)) continue;
      tokens.push_back(wp_.token(id));
    }
    WordPieceDecoder("##", true).apply(tokens);
    std::string out;
    for (const auto& t : tokens) out += t;
    return out;
  }
  int64_t vocab_size() const override { return wp_.vocab_size(); }
  std::optional<int64_t> token_to_id(std::string_view token) const override {
    const int64_t id = wp_.token_id(std::string(token));
    if (wp_.token(id) != token) return std::nullopt;
    return id;
  }
  std::string id_to_token(int64_t id) const override {
    LATHE_CHECK(id >= 0 && id < wp_.vocab_size(), DataError, "{}: no token has id {}", origin_, id);
    return wp_.token(id);
  }
  const std::vector<AddedToken>& added_tokens() const override { return added_; }

 private:
  WordPiece wp_;
  std::vector<AddedToken> added_;
};

}  // namespace

std::unique_ptr<Tokenizer> byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> tokenizer_from_json(std::string_view json_text,
                                               const std::string& origin,
                                               std::string_view config_json) {
  return std::make_unique<JsonTokenizer>(json_text, origin, config_json);
}

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path file = path / "tokenizer.json";
    LATHE_CHECK(fs::exists(file, ec), DataError,
                "{}: the folder has no tokenizer.json (lathe reads the tokenizer.json every "
                "Hugging Face model folder carries; a BERT vocab.txt can be named directly)",
                path.string());
    const fs::path config = path / "tokenizer_config.json";
    const std::string config_text =
        fs::exists(config, ec) ? detail::read_file(config, "tokenizer config") : std::string();
    return tokenizer_from_json(detail::read_file(file, "tokenizer"), file.string(), config_text);
  }
  if (path.extension() == ".txt") return std::make_unique<VocabWordPiece>(path);
  const std::string text = detail::read_file(path, "tokenizer");
  const fs::path config = path.parent_path() / "tokenizer_config.json";
  const std::string config_text =
      fs::exists(config, ec) ? detail::read_file(config, "tokenizer config") : std::string();
  return tokenizer_from_json(text, path.string(), config_text);
}

}  // namespace lathe::data
