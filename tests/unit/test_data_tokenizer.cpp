// Data: tokenizer.json tokenizers token for token against the `tokenizers` library, and the reader's errors.
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "lathe/core/error.h"
#include "lathe/data/chat_template.h"
#include "lathe/data/tokenizer.h"
#include "tests/unit/data_support.h"

using lathe::DataError;
using lathe::testing::expect_error;
using lathe::testing::read_text;
using lathe::testing::TempDir;
using lathe::testing::write_text;
using namespace lathe::data;

namespace {

std::vector<std::vector<int64_t>> read_ids(const std::filesystem::path& file) {
  std::vector<std::vector<int64_t>> rows;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    std::istringstream s(line);
    rows.emplace_back();
    for (int64_t id = 0; s >> id;) rows.back().push_back(id);
  }
  return rows;
}

std::string show(const std::vector<int64_t>& ids, const Tokenizer& tok) {
  std::string out;
  for (const int64_t id : ids) out += tok.id_to_token(id) + "|";
  return out;
}

/// The oracle's folder, made once for the suite (it trains six tokenizers).
class TokenizerParity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    lathe::testing::run_oracle("tokenizer_oracle.py", *dir_);
    cases_ = new nlohmann::json(nlohmann::json::parse(read_text(*dir_ / "cases.json")));
  }
  static void TearDownTestSuite() {
    delete cases_;
    delete dir_;
  }

  /// Every text's ids, decoded texts, the hard texts without special tokens and a 1 MB word,
  /// compared with the tokenizers library's; prints the corpus size and the mismatch count.
  static void expect_parity(const std::string& kind, const std::string& expected_kind) {
    const auto tok = load_tokenizer(*dir_ / kind / "tokenizer.json");
    EXPECT_EQ(tok->kind(), expected_kind);
    const nlohmann::json& c = (*cases_)[kind];
    EXPECT_EQ(tok->vocab_size(), c["vocab_size"].get<int64_t>());
    const auto texts = (*cases_)["texts"].get<std::vector<std::string>>();
    const auto ids = read_ids(*dir_ / kind / "ids.txt");
    ASSERT_EQ(ids.size(), texts.size());
    size_t mismatched = 0, decode_mismatched = 0, bytes = 0, tokens = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      bytes += texts[i].size();
      tokens += ids[i].size();
      const std::vector<int64_t> ours = tok->encode(texts[i]);
      if (ours != ids[i] && ++mismatched <= 5)
        ADD_FAILURE() << kind << " text " << i << ": " << texts[i] << "\nours:   " << show(ours, *tok)
                      << "\ntheirs: " << show(ids[i], *tok);
      const std::string dec = tok->decode(ids[i]), skip = tok->decode(ids[i], true);
      if ((dec != c["decoded"][i].get<std::string>() ||
           skip != c["decoded_skip"][i].get<std::string>()) &&
          ++decode_mismatched <= 5)
        ADD_FAILURE() << kind << " decoding text " << i << ":\nours:   " << dec << "\ntheirs: "
                      << c["decoded"][i].get<std::string>() << "\nskipping specials, ours:   "
                      << skip << "\ntheirs: " << c["decoded_skip"][i].get<std::string>();
    }
    std::cout << "[parity] " << kind << ": " << texts.size() << " texts, " << bytes << " bytes, "
              << tokens << " tokens; " << mismatched << " id mismatches, " << decode_mismatched
              << " decode mismatches\n";
    EXPECT_EQ(mismatched, 0u);
    EXPECT_EQ(decode_mismatched, 0u);
    const auto hard = (*cases_)["hard"].get<std::vector<std::string>>();
    const auto plain = read_ids(*dir_ / kind / "plain_ids.txt");
    ASSERT_EQ(plain.size(), hard.size());
    for (size_t i = 0; i < hard.size(); ++i)
      EXPECT_EQ(tok->encode(hard[i], /*add_special_tokens=*/false), plain[i]) << hard[i];
    // One 1 MB word: a merge loop per word that is not quadratic finishes.
    const auto long_word = (*cases_)["long_word"].get<std::string>();
    EXPECT_EQ(tok->encode(long_word), read_ids(*dir_ / kind / "long_word.txt").at(0));
  }

  /// A Hugging Face folder: special ids from tokenizer_config.json or the well-known names.
  static void folder_names_the_special_ids();

  static TempDir* dir_;
  static nlohmann::json* cases_;
};
TempDir* TokenizerParity::dir_ = nullptr;
nlohmann::json* TokenizerParity::cases_ = nullptr;

}  // namespace

// One test for the six kinds: the oracle trains them all in one run (about 30 s).
TEST_F(TokenizerParity, EveryKindMatchesTheTokenizersLibrary) {
  expect_parity("gpt2", "bpe");       // byte-level BPE, GPT-2's split pattern
  expect_parity("llama3", "bpe");     // byte-level BPE, Llama 3's Split pattern, ignore_merges
  expect_parity("qwen2", "bpe");      // byte-level BPE, Qwen2's Split pattern, NFC
  expect_parity("llama2", "bpe");     // SentencePiece-style: Prepend/Replace, byte fallback
  expect_parity("mistral", "bpe");    // the same model behind Metaspace (prepend first)
  expect_parity("wordpiece", "wordpiece");
  folder_names_the_special_ids();
}

void TokenizerParity::folder_names_the_special_ids() {
  TempDir folder;
  std::filesystem::copy_file(*dir_ / "llama2" / "tokenizer.json", folder / "tokenizer.json");
  // Without tokenizer_config.json: the well-known names.
  auto tok = load_tokenizer(folder.path());
  EXPECT_EQ(tok->special_ids().bos, tok->token_to_id("<s>"));
  EXPECT_EQ(tok->special_ids().eos, tok->token_to_id("</s>"));
  EXPECT_EQ(tok->special_ids().unk, tok->token_to_id("<unk>"));
  EXPECT_FALSE(tok->special_ids().pad.has_value());
  EXPECT_TRUE(tok->is_special(*tok->token_to_id("<s>")));
  EXPECT_EQ(tok->decode(tok->encode("Hello world"), true), "Hello world");
  // tokenizer_config.json names them (a string or an AddedToken object).
  write_text(folder / "tokenizer_config.json",
             R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "pad_token": "<unk>"})");
  tok = load_tokenizer(folder.path());
  EXPECT_EQ(tok->special_ids().pad, tok->token_to_id("<unk>"));
  write_text(folder / "tokenizer_config.json", R"({"eos_token": "<|im_end|>"})");
  expect_error<DataError>([&] { load_tokenizer(folder.path()); },
                          {"tokenizer_config.json", "eos_token", "'<|im_end|>' is not a token"});
  // A tokenizer.json named directly reads the tokenizer_config.json beside it.
  expect_error<DataError>([&] { tok = load_tokenizer(folder / "tokenizer.json"); }, {"eos_token"});
  std::filesystem::remove(folder / "tokenizer_config.json");
  tok = load_tokenizer(folder.path());
  // Ids outside the vocabulary are refused by decode; text that is not UTF-8 by encode.
  expect_error<DataError>([&] { tok->decode({tok->vocab_size()}); }, {"no token has id"});
  expect_error<DataError>([&] { tok->encode("bad \xff byte", true, "notes.txt:3"); },
                          {"notes.txt:3", "not valid UTF-8", "byte 5"});
}

TEST(Tokenizer, MalformedTokenizerJsonIsADataErrorNamingFileAndKey) {
  const std::string ok_model =
      R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  const auto load = [](const std::string& text) {
    return tokenizer_from_json(text, "tok/tokenizer.json");
  };
  const auto good = load("{" + ok_model + "}");
  EXPECT_EQ(good->encode("abab"), (std::vector<int64_t>{2, 2}));
  expect_error<DataError>([&] { load("{\"model\": "); }, {"tok/tokenizer.json", "not valid JSON"});
  expect_error<DataError>([&] { load("[1, 2]"); }, {"tok/tokenizer.json", "expected a JSON object"});
  expect_error<DataError>([&] { load(R"({"model": {"type": "Unigram", "vocab": []}})"); },
                          {"tok/tokenizer.json: model.type", "'Unigram'", "BPE and WordPiece"});
  expect_error<DataError>([&] { load(R"({"model": {"type": "BPE", "vocab": {"a": 0}}})"); },
                          {"tok/tokenizer.json: model.merges: missing"});
  expect_error<DataError>(
      [&] { load(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}})"); },
      {"tok/tokenizer.json: model.merges[0]", "'c', which is not in the vocabulary"});
  expect_error<DataError>(
      [&] { load(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}})"); },
      {"model.merges[0]", "the merged token 'ab' is not in the vocabulary"});
  expect_error<DataError>(
      [&] { load(R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})"); },
      {"model.vocab[\"a\"]", "expected an integer"});
  expect_error<DataError>([&] { load("{" + ok_model + R"(, "normalizer": {"type": "Precompiled"}})"); },
                          {"normalizer.type", "'Precompiled' is not a type lathe reads"});
  expect_error<DataError>(
      [&] {
        load("{" + ok_model +
             R"(, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split",
             "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}]}})");
      },
      {"pre_tokenizer.pretokenizers[0].pattern.Regex", "does not compile"});
  expect_error<DataError>(
      [&] { load("{" + ok_model + R"(, "added_tokens": [{"content": "<s>"}]})"); },
      {"added_tokens[0].id: missing"});
  expect_error<DataError>(
      [&] { load("{" + ok_model + R"(, "decoder": {"type": "Strip", "content": " ", "start": 1}})"); },
      {"decoder.stop: missing"});
  expect_error<DataError>([&] { load_tokenizer("/nonexistent/tokenizer.json"); },
                          {"/nonexistent/tokenizer.json", "no such file"});
}

TEST(Tokenizer, BytesAndVocabTxtBehindTheSameInterface) {
  const auto bytes = byte_tokenizer();
  EXPECT_EQ(bytes->vocab_size(), 256);
  EXPECT_EQ(bytes->encode("hé"), (std::vector<int64_t>{'h', 0xC3, 0xA9}));
  EXPECT_EQ(bytes->decode({'h', 0xC3, 0xA9}), "hé");
  TempDir dir;
  write_text(dir / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n##s\n,\n");
  const auto wp = load_tokenizer(dir / "vocab.txt");
  EXPECT_EQ(wp->kind(), "wordpiece");
  EXPECT_EQ(wp->encode("Hello, worlds"), (std::vector<int64_t>{2, 5, 8, 6, 7, 3}));
  EXPECT_EQ(wp->encode("Hello", false), (std::vector<int64_t>{5}));
  EXPECT_EQ(wp->decode({2, 5, 8, 6, 7, 3}, true), "hello, worlds");
  EXPECT_EQ(wp->special_ids().pad, 0);
  EXPECT_EQ(wp->special_ids().eos, 3);
  EXPECT_TRUE(wp->is_special(2));
}

TEST(ChatTemplate, RendersAndTokenizesAsTransformersApplyChatTemplate) {
  TempDir dir;
  lathe::testing::run_oracle("chat_template_oracle.py", dir);
  const auto cases = nlohmann::json::parse(read_text(dir / "cases.json"));
  ASSERT_EQ(cases.size(), 48u);  // 6 templates x 4 conversations x add_generation_prompt
  size_t rendered = 0, refused = 0;
  for (const auto& c : cases) {
    const std::string family = c["family"].get<std::string>();
    const auto folder = dir / family;
    const auto config = nlohmann::json::parse(read_text(folder / "tokenizer_config.json"));
    const auto token = [&](const char* key) {
      return config[key].is_string() ? config[key].get<std::string>() : std::string();
    };
    const ChatTemplate tmpl = load_chat_template(folder);
    std::vector<ChatMessage> messages;
    for (const auto& m : c["messages"])
      messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    const bool gen = c["add_generation_prompt"].get<bool>();
    if (c.contains("error")) {
      expect_error<DataError>(
          [&] { tmpl.render(messages, gen, token("bos_token"), token("eos_token")); },
          {"tokenizer_config.json", c["error"].get<std::string>()});
      ++refused;
      continue;
    }
    const std::string text = tmpl.render(messages, gen, token("bos_token"), token("eos_token"));
    EXPECT_EQ(text, c["text"].get<std::string>()) << family << " (add_generation_prompt " << gen << ")";
    // apply_chat_template(tokenize=True): the rendered text encoded without added specials.
    const auto tok = load_tokenizer(folder);
    EXPECT_EQ(tok->encode(text, false), c["ids"].get<std::vector<int64_t>>()) << family;
    ++rendered;
  }
  EXPECT_EQ(rendered, 44u);
  EXPECT_EQ(refused, 4u);  // Mistral's template refuses a system turn
  // Syntax errors name the file and the line.
  expect_error<DataError>([] { ChatTemplate("a\n{% if x %}b", "t.jinja"); },
                          {"t.jinja: chat template line 2", "no {% endif %}"});
  expect_error<DataError>([] { ChatTemplate("{{ x | frobnicate }}", "t.jinja").render({}, false, "", ""); },
                          {"'frobnicate' is not a filter"});
  expect_error<DataError>([] { ChatTemplate("{% macro m() %}{% endmacro %}", "t.jinja"); },
                          {"'{% macro %}' is not a statement"});
}
