// Data: byte-level LM windows, the WordPiece tokenizer against Hugging Face, text CSVs.
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include "lathe/core/error.h"
#include "lathe/data/text.h"
#include "tests/unit/data_support.h"

using lathe::DataError;
using lathe::testing::expect_error;
using lathe::testing::TempDir;
using namespace lathe::data;

TEST(Text, ByteCorpusWindowsShiftByOne) {
  const ByteCorpus corpus("abcdefghij", "mem", /*seq_len=*/4);
  EXPECT_EQ(corpus.size(), 2);  // windows at 0 and 4 (the one at 8 lacks a next byte)
  const Example e = corpus.get(1);
  EXPECT_TRUE(e.input.equal(at::tensor(std::vector<int64_t>{'e', 'f', 'g', 'h'})));
  EXPECT_TRUE(e.target.equal(at::tensor(std::vector<int64_t>{'f', 'g', 'h', 'i'})));
  EXPECT_EQ(ByteCorpus("abcdefghij", "mem", 4, /*stride=*/1).size(), 6);
  expect_error<DataError>([] { ByteCorpus("abc", "tiny.txt", 8); }, {"tiny.txt", "too short"});
  expect_error<DataError>([] { ByteCorpus("/nonexistent/c.txt", 8); }, {"c.txt", "no such file"});
}

TEST(Text, WordPieceMatchesHuggingFaceBertTokenizer) {
  TempDir dir;
  lathe::testing::run_oracle("wordpiece_oracle.py", dir);
  const WordPiece tok(dir / "vocab.txt");
  const auto cases = nlohmann::json::parse(lathe::testing::read_text(dir / "cases.json"));
  ASSERT_GE(cases.size(), 30u);
  for (const auto& c : cases) {
    const auto text = c["text"].get<std::string>();
    const auto max_length = c["max_length"].get<int64_t>();
    const Encoding e = tok.encode(text, max_length);
    std::string ours;
    for (int64_t id : e.ids) ours += tok.token(id) + " ";
    EXPECT_EQ(e.ids, c["ids"].get<std::vector<int64_t>>())
        << text << " (max_length " << max_length << ")\nours: " << ours;
    EXPECT_EQ(e.attention_mask, c["attention_mask"].get<std::vector<int64_t>>()) << text;
  }
  // (text, label) CSV → fixed-length ids and sorted class ids.
  const TextClassificationCsv reviews(read_csv(dir / "reviews.csv"), "text", "label", tok, 12);
  EXPECT_EQ(reviews.classes(), (std::vector<std::string>{"neg", "pos"}));
  EXPECT_EQ(reviews.ids().sizes(), (std::vector<int64_t>{3, 12}));
  EXPECT_TRUE(reviews.labels().equal(at::tensor(std::vector<int64_t>{1, 0, 1})));
  EXPECT_EQ(reviews.get(0).input[0].item<int64_t>(), tok.cls_id());
  expect_error<DataError>(
      [&] {
        WordPiece(std::vector<std::string>{"[PAD]", "a"}, true, "v.txt");
      },
      {"v.txt: the vocabulary has no [UNK] token"});
}
