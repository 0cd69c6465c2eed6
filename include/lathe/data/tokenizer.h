// One tokenizer interface for the text sources: bytes, BERT's vocab.txt WordPiece, and Hugging
// Face tokenizer.json files (byte-level BPE, SentencePiece-style BPE with byte fallback, WordPiece).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::data {

/// A token outside the model's vocabulary rules, as tokenizer.json's "added_tokens" lists it:
/// matched in the text before the model runs. `special` ones are skipped by
/// decode(skip_special_tokens); `normalized` ones are matched after the normaliser (on the
/// normalised text), the others on the raw text; `lstrip`/`rstrip` take the whitespace on that
/// side into the match; `single_word` ones match only between non-word characters.
struct AddedToken {
  int64_t id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
};

/// The ids a run takes from its tokenizer (absent when the tokenizer has no such token).
struct SpecialIds {
  std::optional<int64_t> bos, eos, pad, unk;
};

/// Text ↔ token ids. Implementations are immutable after construction and safe to call from
/// several threads (the BPE word cache is guarded).
///
///   auto tok = lathe::data::load_tokenizer("TinyLlama-1.1B/");   // tokenizer.json (+ config)
///   std::vector<int64_t> ids = tok->encode("Hello world");      // <s> ▁Hello ▁world
///   std::string back = tok->decode(ids, /*skip_special_tokens=*/true);   // "Hello world"
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  /// "bytes", "wordpiece" or "bpe".
  virtual std::string kind() const = 0;
  /// The ids of `text` (valid UTF-8, else a DataError naming `where` and the byte); with
  /// `add_special_tokens` the post-processor's tokens around them (BERT's [CLS] … [SEP],
  /// Llama's <s> …), as tokenizers' encode(text, add_special_tokens) does.
  virtual std::vector<int64_t> encode(std::string_view text, bool add_special_tokens = true,
                                      std::string_view where = "text") const = 0;
  /// The text of `ids`; special tokens left out when `skip_special_tokens`. An id outside the
  /// vocabulary is a DataError naming it.
  virtual std::string decode(const std::vector<int64_t>& ids,
                             bool skip_special_tokens = false) const = 0;
  /// One more than the largest id (model vocabulary and added tokens): the embedding's rows.
  virtual int64_t vocab_size() const = 0;
  virtual std::optional<int64_t> token_to_id(std::string_view token) const = 0;
  /// The token string of `id` (DataError when no token has it).
  virtual std::string id_to_token(int64_t id) const = 0;
  /// The added tokens (empty for bytes; BERT's five specials for a vocab.txt).
  virtual const std::vector<AddedToken>& added_tokens() const = 0;
  const SpecialIds& special_ids() const { return special_; }
  /// Whether `id` is a special added token (skipped by decode(…, true)).
  bool is_special(int64_t id) const;
  /// Where the tokenizer was read from (names it in errors).
  const std::string& origin() const { return origin_; }

 protected:
  SpecialIds special_;
  std::string origin_;
};

/// Bytes as tokens: a vocabulary of 256, ids = the UTF-8 bytes, no special tokens.
std::unique_ptr<Tokenizer> byte_tokenizer();

/// The tokenizer at `path`: a tokenizer.json, a BERT vocab.txt (lower-casing, as
/// BertTokenizer), or a Hugging Face folder holding tokenizer.json (and optionally
/// tokenizer_config.json, whose bos_token / eos_token / pad_token name the special ids; without
/// it they come from the well-known names among the special added tokens: <s>, </s>,
/// <|endoftext|>, <|begin_of_text|>, <|end_of_text|>, [CLS], [SEP], [PAD], <pad>, <unk>, [UNK]).
/// What loads from tokenizer.json:
///  - normalizers NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace (string or regex), Strip,
///    BertNormalizer, Sequence;
///  - pre-tokenizers ByteLevel, Split (string or regex; every split behaviour, invert), Metaspace,
///    BertPreTokenizer, Whitespace, WhitespaceSplit, Digits, Punctuation, Sequence;
///  - models BPE (merges as "a b" strings or [a, b] pairs; byte_fallback, fuse_unk, ignore_merges,
///    continuing_subword_prefix, end_of_word_suffix) and WordPiece;
///  - post-processors TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence;
///  - decoders ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, WordPiece, BPEDecoder,
///    Sequence.
/// Anything else (an unknown type, bad JSON, a missing or mistyped key, a merge naming a token
/// the vocabulary lacks) is a DataError naming the file and the key.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);

/// From tokenizer.json's text; `origin` names it in errors, `config_json` is
/// tokenizer_config.json's text or empty.
std::unique_ptr<Tokenizer> tokenizer_from_json(std::string_view json, const std::string& origin,
                                               std::string_view config_json = {});

}  // namespace lathe::data
