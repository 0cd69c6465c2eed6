// Text sources: byte windows for language modelling, BERT WordPiece (ICU for Unicode), text CSVs.
#include "lathe/data/text.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>

#include "lathe/core/error.h"
#include "read_file.h"
#include "wordpiece_greedy.h"

namespace lathe::data {
namespace {

// Character classes exactly as BertTokenizer's _is_whitespace, _is_control, _is_punctuation.
bool is_whitespace(UChar32 c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || u_charType(c) == U_SPACE_SEPARATOR;
}
bool is_control(UChar32 c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (u_charType(c)) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
    case U_UNASSIGNED:
      return true;
    default:
      return false;
  }
}
bool is_punctuation(UChar32 c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126))
    return true;
  switch (u_charType(c)) {
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
bool is_cjk(UChar32 c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

std::string to_utf8(const icu::UnicodeString& s) {
  std::string out;
  s.toUTF8String(out);
  return out;
}

const icu::Normalizer2& normalizer(bool nfd) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n =
      nfd ? icu::Normalizer2::getNFDInstance(status) : icu::Normalizer2::getNFCInstance(status);
  LATHE_CHECK(U_SUCCESS(status) && n != nullptr, DataError, "ICU normaliser unavailable: {}",
              u_errorName(status));
  return *n;
}

icu::UnicodeString normalize(const icu::UnicodeString& s, bool nfd) {
  UErrorCode status = U_ZERO_ERROR;
  icu::UnicodeString out = normalizer(nfd).normalize(s, status);
  LATHE_CHECK(U_SUCCESS(status), DataError, "Unicode normalisation failed: {}",
              u_errorName(status));
  return out;
}

const std::vector<std::string> kSpecial = {"[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"};

}  // namespace

bool valid_utf8(std::string_view s, size_t& bad_offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (p[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // No overlong forms, no surrogates, nothing past U+10FFFF.
    ok = ok && !(len == 3 && cp < 0x800) && !(len == 4 && cp < 0x10000) &&
         !(cp >= 0xD800 && cp <= 0xDFFF) && cp <= 0x10FFFF;
    if (!ok) {
      bad_offset = i;
      return false;
    }
    i += len;
  }
  return true;
}

// ---- ByteCorpus -----------------------------------------------------------------------------

ByteCorpus::ByteCorpus(const std::filesystem::path& file, int64_t seq_len, int64_t stride)
    : ByteCorpus(detail::read_file(file, "text corpus"), file.string(), seq_len, stride) {}

ByteCorpus::ByteCorpus(std::string text, std::string origin, int64_t seq_len, int64_t stride)
    : seq_len_(seq_len), stride_(stride > 0 ? stride : seq_len) {
  LATHE_CHECK(seq_len_ > 0, DataError, "{}: seq_len must be positive, got {}", origin, seq_len_);
  LATHE_CHECK(static_cast<int64_t>(text.size()) > seq_len_, DataError,
              "{}: {} bytes of text, too short for one window of {} + 1", origin, text.size(),
              seq_len_);
  bytes_ = at::empty({static_cast<int64_t>(text.size())}, at::TensorOptions().dtype(at::kByte));
  std::copy(text.begin(), text.end(), reinterpret_cast<char*>(bytes_.data_ptr<uint8_t>()));
}

int64_t ByteCorpus::size() const { return (bytes_.size(0) - seq_len_ - 1) / stride_ + 1; }

Example ByteCorpus::get(int64_t index) const {
  LATHE_CHECK(index >= 0 && index < size(), DataError, "window {} out of range [0, {})", index,
              size());
  const at::Tensor w = bytes_.narrow(0, index * stride_, seq_len_ + 1).to(at::kLong);  // (T + 1)
  return {w.narrow(0, 0, seq_len_), w.narrow(0, 1, seq_len_)};                         // (T), (T)
}

// ---- TokenCorpus ----------------------------------------------------------------------------

TokenCorpus::TokenCorpus(const std::vector<int64_t>& ids, const std::string& origin,
                         int64_t seq_len, int64_t stride)
    : seq_len_(seq_len), stride_(stride > 0 ? stride : seq_len) {
  LATHE_CHECK(seq_len_ > 0, DataError, "{}: seq_len must be positive, got {}", origin, seq_len_);
  LATHE_CHECK(static_cast<int64_t>(ids.size()) > seq_len_, DataError,
              "{}: {} tokens of text, too short for one window of {} + 1", origin, ids.size(),
              seq_len_);
  ids_ = at::empty({static_cast<int64_t>(ids.size())}, at::TensorOptions().dtype(at::kInt));
  std::copy(ids.begin(), ids.end(), ids_.data_ptr<int32_t>());
}

int64_t TokenCorpus::size() const { return (ids_.size(0) - seq_len_ - 1) / stride_ + 1; }

Example TokenCorpus::get(int64_t index) const {
  LATHE_CHECK(index >= 0 && index < size(), DataError, "window {} out of range [0, {})", index,
              size());
  const at::Tensor w = ids_.narrow(0, index * stride_, seq_len_ + 1).to(at::kLong);  // (T + 1)
  return {w.narrow(0, 0, seq_len_), w.narrow(0, 1, seq_len_)};                       // (T), (T)
}

// ---- WordPiece ------------------------------------------------------------------------------

WordPiece::WordPiece(const std::filesystem::path& vocab_file, bool lower_case)
    : WordPiece(
          [&] {
            std::vector<std::string> lines;
            std::stringstream in(detail::read_file(vocab_file, "vocabulary"));
            for (std::string line; std::getline(in, line);) {
              while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
              lines.push_back(line);
            }
            return lines;
          }(),
          lower_case, vocab_file.string()) {}

WordPiece::WordPiece(std::vector<std::string> vocab, bool lower_case, std::string origin)
    : vocab_(std::move(vocab)), lower_case_(lower_case) {
  // A token listed twice maps to its last line, as Hugging Face's load_vocab builds its dict.
  for (size_t i = 0; i < vocab_.size(); ++i) {
    size_t bad = 0;
    LATHE_CHECK(valid_utf8(vocab_[i], bad), DataError,
                "{}:{}: the vocabulary line is not valid UTF-8 (byte {}); a vocab.txt is UTF-8",
                origin, i + 1, bad + 1);
    ids_[vocab_[i]] = static_cast<int64_t>(i);
  }
  const auto need = [&](const char* t) {
    const auto it = ids_.find(t);
    LATHE_CHECK(it != ids_.end(), DataError,
                "{}: the vocabulary has no {} token (a BERT vocab.txt has [PAD], [UNK], [CLS], "
                "[SEP], [MASK], one per line)",
                origin, t);
    return it->second;
  };
  pad_ = need("[PAD]");
  unk_ = need("[UNK]");
  cls_ = need("[CLS]");
  sep_ = need("[SEP]");
}

int64_t WordPiece::token_id(const std::string& token) const {
  const auto it = ids_.find(token);
  return it == ids_.end() ? unk_ : it->second;
}

std::vector<std::string> WordPiece::basic_tokens(std::string_view text) const {
  const icu::UnicodeString raw = icu::UnicodeString::fromUTF8(
      icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  // Clean (drop NUL, U+FFFD and controls; whitespace → ' '), space out CJK ideographs.
  icu::UnicodeString clean;
  for (int32_t i = 0; i < raw.length(); i = raw.moveIndex32(i, 1)) {
    const UChar32 c = raw.char32At(i);
    if (c == 0 || c == 0xFFFD || is_control(c)) continue;
    if (is_whitespace(c))
      clean.append(UChar32{' '});
    else if (is_cjk(c))
      clean.append(UChar32{' '}).append(c).append(UChar32{' '});
    else
      clean.append(c);
  }
  clean = normalize(clean, /*nfd=*/false);  // NFC, as BasicTokenizer does first

  std::vector<std::string> out;
  const auto emit_word = [&](icu::UnicodeString word) {
    if (lower_case_) {
      word.toLower(icu::Locale::getRoot());
      const icu::UnicodeString nfd = normalize(word, /*nfd=*/true);
      word.remove();
      for (int32_t i = 0; i < nfd.length(); i = nfd.moveIndex32(i, 1))
        if (u_charType(nfd.char32At(i)) != U_NON_SPACING_MARK) word.append(nfd.char32At(i));
    }
    icu::UnicodeString piece;  // split off every punctuation character
    for (int32_t i = 0; i < word.length(); i = word.moveIndex32(i, 1)) {
      const UChar32 c = word.char32At(i);
      if (is_punctuation(c)) {
        if (!piece.isEmpty()) out.push_back(to_utf8(piece));
        piece.remove();
        out.push_back(to_utf8(icu::UnicodeString(c)));
      } else {
        piece.append(c);
      }
    }
    if (!piece.isEmpty()) out.push_back(to_utf8(piece));
  };
  icu::UnicodeString word;
  for (int32_t i = 0; i <= clean.length();
       i = i < clean.length() ? clean.moveIndex32(i, 1) : i + 1) {
    if (i == clean.length() || clean.char32At(i) == ' ') {
      if (!word.isEmpty()) emit_word(word);
      word.remove();
    } else {
      word.append(clean.char32At(i));
    }
  }
  return out;
}

void WordPiece::wordpiece(const std::string& word, std::vector<std::string>& out) const {
  if (detail::utf8_count(word) > 100) {
    out.push_back("[UNK]");
    return;
  }
  auto pieces = detail::wordpiece_greedy(word, "##", [&](const std::string& s) {
    return ids_.count(s) != 0;
  });
  if (!pieces) {
    out.push_back("[UNK]");
    return;
  }
  out.insert(out.end(), pieces->begin(), pieces->end());
}

std::vector<std::string> WordPiece::tokenize(std::string_view text) const {
  std::vector<std::string> out;
  // Special tokens written in the text stay whole; the text between them is tokenized. Each
  // special token's next occurrence is searched for only once it has been passed, so the whole
  // text is scanned a bounded number of times: linear, however many special tokens it holds.
  std::vector<size_t> next_at(kSpecial.size(), 0);
  std::vector<bool> known(kSpecial.size());
  for (size_t k = 0; k < kSpecial.size(); ++k) {
    known[k] = ids_.count(kSpecial[k]) != 0;
    next_at[k] = known[k] ? text.find(kSpecial[k]) : std::string_view::npos;
  }
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t next = std::string_view::npos;
    size_t which = kSpecial.size();
    for (size_t k = 0; k < kSpecial.size(); ++k) {
      if (next_at[k] != std::string_view::npos && next_at[k] < pos)
        next_at[k] = text.find(kSpecial[k], pos);  // passed (inside an earlier match): look again
      if (next_at[k] < next) {
        next = next_at[k];
        which = k;
      }
    }
    const std::string_view chunk =
        text.substr(pos, next == std::string_view::npos ? text.npos : next - pos);
    for (const auto& w : basic_tokens(chunk)) wordpiece(w, out);
    if (which == kSpecial.size()) break;
    out.push_back(kSpecial[which]);
    pos = next + kSpecial[which].size();
  }
  return out;
}

Encoding WordPiece::encode(std::string_view text, int64_t max_length, bool pad) const {
  LATHE_CHECK(max_length == 0 || max_length >= 2, DataError,
              "max_length {} leaves no room for [CLS] and [SEP]", max_length);
  const std::vector<std::string> tokens = tokenize(text);
  auto n = static_cast<int64_t>(tokens.size());
  if (max_length > 0) n = std::min(n, max_length - 2);  // truncation: longest first, one sequence
  Encoding e;
  e.ids.push_back(cls_);
  for (int64_t i = 0; i < n; ++i) e.ids.push_back(token_id(tokens[static_cast<size_t>(i)]));
  e.ids.push_back(sep_);
  e.attention_mask.assign(e.ids.size(), 1);
  if (pad && max_length > 0) {
    e.attention_mask.resize(static_cast<size_t>(max_length), 0);
    e.ids.resize(static_cast<size_t>(max_length), pad_);
  }
  e.token_type_ids.assign(e.ids.size(), 0);
  return e;
}

// ---- TextClassificationCsv ------------------------------------------------------------------

namespace {
/// A label cell without the spaces around it: " pos" and "pos" are one class.
std::string label_of(const CsvTable& table, int64_t row, int64_t col) {
  std::string_view s = table.rows[static_cast<size_t>(row)][static_cast<size_t>(col)];
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return std::string(s);
}
}  // namespace

TextClassificationCsv::TextClassificationCsv(const CsvTable& table, const std::string& text_column,
                                             const std::string& label_column,
                                             const WordPiece& tokenizer, int64_t max_length,
                                             bool replace_invalid_utf8) {
  LATHE_CHECK(max_length >= 2, DataError, "{}: max_length {} must be at least 2", table.origin,
              max_length);
  const int64_t tc = table.column_index(text_column), lc = table.column_index(label_column);
  std::set<std::string> labels;
  for (int64_t r = 0; r < table.num_rows(); ++r) {
    LATHE_CHECK(!table.is_missing(r, lc), DataError, "{}: the label column '{}' is empty here",
                table.where(r), label_column);
    labels.insert(label_of(table, r, lc));
    size_t bad = 0;
    LATHE_CHECK(replace_invalid_utf8 ||
                    valid_utf8(table.rows[static_cast<size_t>(r)][static_cast<size_t>(tc)], bad),
                DataError,
                "{}: column '{}' is not valid UTF-8 (byte {} of the cell); convert the file to "
                "UTF-8, or set data.invalid_utf8=replace to drop such bytes as Hugging Face's "
                "tokenizer does with errors='replace'",
                table.where(r), text_column, bad + 1);
  }
  classes_.assign(labels.begin(), labels.end());
  const int64_t n = table.num_rows();
  ids_ = at::empty({n, max_length}, at::TensorOptions().dtype(at::kLong));  // (N, L)
  labels_ = at::empty({n}, at::TensorOptions().dtype(at::kLong));           // (N)
  for (int64_t r = 0; r < n; ++r) {
    const auto& row = table.rows[static_cast<size_t>(r)];
    const Encoding e = tokenizer.encode(row[static_cast<size_t>(tc)], max_length);
    std::copy(e.ids.begin(), e.ids.end(), ids_.data_ptr<int64_t>() + r * max_length);
    labels_.data_ptr<int64_t>()[r] =
        std::lower_bound(classes_.begin(), classes_.end(), label_of(table, r, lc)) -
        classes_.begin();
  }
}

Example TextClassificationCsv::get(int64_t index) const {
  LATHE_CHECK(index >= 0 && index < size(), DataError, "record {} out of range [0, {})", index,
              size());
  return {ids_[index], labels_[index]};
}

}  // namespace lathe::data
