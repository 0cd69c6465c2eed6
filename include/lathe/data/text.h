// Text: byte-level language-modelling windows, a BERT WordPiece tokenizer, (text, label) CSVs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/data/csv.h"
#include "lathe/data/dataset.h"

namespace lathe::data {

/// A text file as bytes (vocabulary of 256) cut into language-modelling windows: record i is
/// input = bytes[s, s + T) and target = bytes[s + 1, s + T + 1), s = i * stride, both (T) int64.
///
///   auto corpus = std::make_shared<ByteCorpus>("shakespeare.txt", /*seq_len=*/256);
class ByteCorpus : public Dataset {
 public:
  /// stride 0 = seq_len (windows do not overlap).
  ByteCorpus(const std::filesystem::path& file, int64_t seq_len, int64_t stride = 0);
  /// From text in memory; `origin` names it in errors.
  ByteCorpus(std::string text, std::string origin, int64_t seq_len, int64_t stride = 0);
  int64_t size() const override;
  Example get(int64_t index) const override;
  /// All bytes: (N) uint8.
  const at::Tensor& bytes() const { return bytes_; }

 private:
  at::Tensor bytes_;
  int64_t seq_len_, stride_;
};

/// Token ids (a tokenizer's encoding of a text) cut into language-modelling windows as
/// ByteCorpus: record i is input = ids[s, s + T) and target = ids[s + 1, s + T + 1), s = i * stride.
///
///   auto tok = lathe::data::load_tokenizer("gpt2/");
///   auto corpus = std::make_shared<TokenCorpus>(tok->encode(text, false), "corpus.txt", 128);
class TokenCorpus : public Dataset {
 public:
  TokenCorpus(const std::vector<int64_t>& ids, const std::string& origin, int64_t seq_len,
              int64_t stride = 0);
  int64_t size() const override;
  Example get(int64_t index) const override;
  /// All ids: (N) int32.
  const at::Tensor& ids() const { return ids_; }

 private:
  at::Tensor ids_;
  int64_t seq_len_, stride_;
};

/// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past
/// U+10FFFF); when not, `bad_offset` is the byte where it goes wrong.
bool valid_utf8(std::string_view s, size_t& bad_offset);

/// An encoded text: ids ([CLS] tokens [SEP] [PAD]...), the attention mask (1 for real tokens)
/// and token type ids (all 0 for one sequence), each max_length long when padding.
struct Encoding {
  std::vector<int64_t> ids;
  std::vector<int64_t> attention_mask;
  std::vector<int64_t> token_type_ids;
};

/// Hugging Face's BertTokenizer from a vocab.txt, with its defaults: clean the text (control
/// characters dropped, whitespace unified), spaces around CJK ideographs, lower-casing and accent
/// stripping (NFD, marks removed) when `lower_case`, splitting on punctuation, then greedy
/// longest-match WordPiece with "##" continuations ([UNK] for a word it cannot cover or longer
/// than 100 characters). Special tokens in the text ([CLS], [SEP], [PAD], [UNK], [MASK]) are
/// kept whole; tokenization is linear in the text, however many of them it holds. A token listed
/// twice in the vocabulary maps to its last line (as Hugging Face's load_vocab); a line that is not
/// valid UTF-8 is a DataError naming the file and line.
///
///   WordPiece tok("bert-base-uncased/vocab.txt");
///   Encoding e = tok.encode("Hello, world!", /*max_length=*/16);   // [CLS] hello , world ! [SEP]
///   [PAD]...
class WordPiece {
 public:
  explicit WordPiece(const std::filesystem::path& vocab_file, bool lower_case = true);
  /// From vocabulary lines in id order.
  WordPiece(std::vector<std::string> vocab, bool lower_case, std::string origin);

  /// The word pieces of `text`, without special tokens.
  std::vector<std::string> tokenize(std::string_view text) const;
  /// ids of [CLS] tokens [SEP], truncated to max_length (0 = no limit) and, with `pad`, padded
  /// with [PAD] to max_length.
  Encoding encode(std::string_view text, int64_t max_length = 0, bool pad = true) const;

  int64_t token_id(const std::string& token) const;  ///< [UNK]'s id when absent
  const std::string& token(int64_t id) const { return vocab_.at(static_cast<size_t>(id)); }
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }
  int64_t pad_id() const { return pad_; }
  int64_t cls_id() const { return cls_; }
  int64_t sep_id() const { return sep_; }
  int64_t unk_id() const { return unk_; }

 private:
  std::vector<std::string> basic_tokens(std::string_view text) const;
  void wordpiece(const std::string& word, std::vector<std::string>& out) const;

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> ids_;
  bool lower_case_;
  int64_t pad_ = 0, cls_ = 0, sep_ = 0, unk_ = 0;
};

/// A CSV of (text, label) rows for classification: input = token ids (max_length) int64 (the
/// attention mask is ids != tokenizer.pad_id()), target = class id (labels sorted, 0..K-1).
///
///   auto reviews = std::make_shared<TextClassificationCsv>(read_csv("reviews.csv"), "text",
///   "label", tok, 128);
class TextClassificationCsv : public Dataset {
 public:
  /// Labels are trimmed of surrounding spaces. A text cell that is not valid UTF-8 is a
  /// DataError naming file and line, unless `replace_invalid_utf8` (then its bad bytes are
  /// dropped, as Hugging Face's tokenizer does after decoding with errors='replace').
  TextClassificationCsv(const CsvTable& table, const std::string& text_column,
                        const std::string& label_column, const WordPiece& tokenizer,
                        int64_t max_length, bool replace_invalid_utf8 = false);
  int64_t size() const override { return ids_.size(0); }
  Example get(int64_t index) const override;
  const std::vector<std::string>& classes() const { return classes_; }
  /// All records: ids (N, max_length) and labels (N).
  const at::Tensor& ids() const { return ids_; }
  const at::Tensor& labels() const { return labels_; }

 private:
  at::Tensor ids_, labels_;
  std::vector<std::string> classes_;
};

}  // namespace lathe::data
