// Data: load_splits for every source from a run config's data section, and make_loaders.
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/data/image.h"
#include "lathe/data/loader.h"
#include "lathe/data/sources.h"
#include "lathe/data/tokenizer.h"
#include "lathe/data/transforms.h"
#include "models/registry.h"
#include "tests/unit/data_support.h"

using lathe::ConfigError;
using lathe::DataError;
using lathe::testing::expect_error;
using lathe::testing::TempDir;
using namespace lathe::data;
namespace tf = lathe::data::transforms;

namespace {

lathe::config::DataSection data_section(const std::string& yaml) {
  return lathe::config::parse_config("data:\n" + yaml + "model: {name: convnet}\n", "run.yaml")
      .data;
}

}  // namespace

TEST(Sources, CsvIrisSplitsStratifiedAndPreprocessesFromConfig) {
  const auto cfg = data_section(
      "  source: csv\n"
      "  path: " +
      lathe::testing::source_dir() +
      "/.venv/lib/python3.11/site-packages/sklearn/datasets/data/iris.csv\n"
      "  target: virginica\n"  // scikit-learn's first line is a count, not names
      "  batch_size: 32\n"
      "  num_workers: 1\n"
      "  columns:\n"
      "    '4': [scale=minmax]\n");
  EXPECT_EQ(cfg.columns.values().at("4").items, (std::vector<std::string>{"scale=minmax"}));
  const DataSplits s = load_splits(cfg, 42);
  EXPECT_EQ(s.train->size(), 120);
  EXPECT_EQ(s.val->size(), 15);
  EXPECT_EQ(s.test->size(), 15);
  EXPECT_EQ(s.info.task, "classification");
  EXPECT_EQ(s.info.classes, (std::vector<std::string>{"0", "1", "2"}));
  EXPECT_EQ(s.info.input_shape(), (std::vector<int64_t>{4}));
  EXPECT_NE(s.preprocessing_json.find("\"scale\": \"minmax\""), std::string::npos);
  const TensorDataset train = materialize(*s.train);
  // Fitted on train: standardised columns have mean 0 and std 1 there (population std).
  EXPECT_NEAR(train.inputs.select(1, 0).mean().item<double>(), 0.0, 1e-5);
  EXPECT_NEAR(train.inputs.select(1, 0).std(/*unbiased=*/false).item<double>(), 1.0, 1e-5);
  EXPECT_NEAR(train.inputs.select(1, 1).min().item<double>(), 0.0, 1e-6);  // column '4': min-max
  EXPECT_TRUE(at::bincount(materialize(*s.test).targets).equal(at::full({3}, 5, at::kLong)));
  Loaders loaders = make_loaders(cfg, s, 42);
  auto b = loaders.train->next();
  EXPECT_EQ(b->inputs.sizes(), (std::vector<int64_t>{32, 4}));
  EXPECT_EQ(loaders.test->num_batches(), 1);
  // A bad per-column step names the config line.
  expect_error<ConfigError>(
      [&] {
        load_splits(
            data_section("  source: csv\n  path: " + lathe::testing::source_dir() +
                         "/.venv/lib/python3.11/site-packages/sklearn/datasets/data/iris.csv\n"
                         "  target: virginica\n  columns:\n    '4': [scale=big]\n"),
            1);
      },
      {"run.yaml:6", "scale = 'big' is not one of: none, standard, minmax"});
}

TEST(Sources, ConfigErrorsForDataKeys) {
  expect_error<ConfigError>([] { data_section("  source: parquet\n  path: x\n"); },
                            {"data.source = 'parquet' must be one of idx, csv"});
  expect_error<ConfigError>(
      [] { data_section("  source: csv\n  path: x\n  val_fraction: 0.5\n  test_fraction: 0.6\n"); },
      {"data.val_fraction + data.test_fraction = 1.1"});
  expect_error<ConfigError>([] { load_splits(data_section("  source: csv\n  path: x.csv\n"), 1); },
                            {"data.target"});
  expect_error<ConfigError>([] { parse_augment({"jitter"}, 28); },
                            {"unknown augmentation 'jitter'"});
  // The resolved config writes the new keys and reads them back unchanged.
  const auto cfg = lathe::config::parse_config(
      "data: {source: csv, path: a.csv, target: y, columns: {a: [impute=mean]}}\n"
      "model: {name: convnet}\n",
      "run.yaml");
  const auto again = lathe::config::parse_config(lathe::config::to_yaml(cfg), "resolved.yaml");
  const auto images = lathe::config::parse_config(
      "data: {source: image_folder, path: imgs, augment: [hflip]}\nmodel: {name: convnet}\n",
      "run.yaml");
  EXPECT_EQ(lathe::config::parse_config(lathe::config::to_yaml(images), "resolved.yaml")
                .data.augment,
            (std::vector<std::string>{"hflip"}));
  EXPECT_EQ(again.data.target, "y");
  EXPECT_EQ(again.data.columns.values().at("a").items, (std::vector<std::string>{"impute=mean"}));
}

TEST(Sources, IdxWithAugmentationThroughTheLoader) {
  const auto cfg = data_section(std::string("  path: ") + lathe::testing::kFashionMnist +
                                "\n  limit_train: 2000\n  limit_test: 500\n  batch_size: 64\n"
                                "  num_workers: 2\n  augment: [random_crop, hflip]\n");
  const DataSplits s = load_splits(cfg, 7);
  EXPECT_EQ(s.train->size() + s.val->size(), 2000);
  EXPECT_NEAR(s.val->size(), 200, 5);  // 10% of each class, rounded per class
  EXPECT_EQ(s.test->size(), 500);
  EXPECT_EQ(s.info.input_shape(), (std::vector<int64_t>{1, 28, 28}));
  Loaders l = make_loaders(cfg, s, 7);
  l.train->set_epoch(0);
  const Batch b = *l.train->next();
  EXPECT_EQ(b.inputs.sizes(), (std::vector<int64_t>{64, 1, 28, 28}));
  EXPECT_EQ(b.targets.scalar_type(), at::kLong);
  // Eval batches are normalised with the training split's statistics: mean ≈ 0, std ≈ 1.
  const Batch v = *l.val->next();
  EXPECT_NEAR(v.inputs.mean().item<double>(), 0.0, 0.1);
  EXPECT_NEAR(v.inputs.std().item<double>(), 1.0, 0.1);
}

TEST(Sources, ImageFolderAndTextCorpus) {
  TempDir dir;
  for (const char* cls : {"ant", "bee"})
    for (int i = 0; i < 10; ++i) {
      std::filesystem::create_directories(dir / "imgs" / cls);
      const at::Tensor img = at::randint(0, 255, {3, 20 + i, 30 - i}, at::kByte);
      lathe::testing::write_text(
          dir / "imgs" / cls / fmt::format("{}.{}", i, i % 2 ? "png" : "jpg"),
          i % 2 ? encode_png(img) : encode_jpeg(img));
    }
  const auto cfg = data_section("  source: image_folder\n  path: " + (dir / "imgs").string() +
                                "\n  image_size: 16\n  batch_size: 4\n  val_fraction: 0.2\n"
                                "  test_fraction: 0.2\n  augment: [random_resized_crop, hflip]\n");
  const DataSplits s = load_splits(cfg, 3);
  EXPECT_EQ(s.info.classes, (std::vector<std::string>{"ant", "bee"}));
  EXPECT_EQ(s.train->size(), 12);
  EXPECT_EQ(s.test->size(), 4);
  Loaders l = make_loaders(cfg, s, 3);
  EXPECT_EQ(l.train->next()->inputs.sizes(), (std::vector<int64_t>{4, 3, 16, 16}));
  EXPECT_EQ(l.test->next()->inputs.sizes(), (std::vector<int64_t>{4, 3, 16, 16}));

  std::string text;
  for (int i = 0; i < 100; ++i) text += fmt::format("line {} of the corpus.\n", i);
  lathe::testing::write_text(dir / "corpus.txt", text);
  const auto tcfg = data_section("  source: text\n  path: " + (dir / "corpus.txt").string() +
                                 "\n  seq_len: 32\n");
  const DataSplits t = load_splits(tcfg, 1);
  const int64_t windows = (static_cast<int64_t>(text.size()) - 33) / 32 + 1;
  EXPECT_EQ(t.train->size() + t.val->size() + t.test->size(), windows);
  EXPECT_EQ(t.info.vocab_size, 256);
  const Example first_test = t.test->get(0);  // the test part is the corpus' tail
  EXPECT_EQ(first_test.input[0].item<int64_t>(),
            static_cast<unsigned char>(text[static_cast<size_t>((windows - t.test->size()) * 32)]));
}

TEST(Sources, TextCorpusThroughATokenizer) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 100; ++i) text += fmt::format("line {} of the corpus.\n", i);
  lathe::testing::write_text(dir / "corpus.txt", text);
  // A character-level BPE over the corpus' characters, with two merges and an eos token.
  nlohmann::json vocab = nlohmann::json::object();
  for (const char c : std::string("abcdefghijklmnopqrstuvwxyz0123456789 .\n"))
    vocab[std::string(1, c)] = vocab.size();
  vocab["li"] = vocab.size();
  vocab["line"] = vocab.size();
  vocab["ne"] = vocab.size();
  const nlohmann::json tj = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"l i", "n e", "li ne"}}}},
      {"added_tokens",
       {{{"id", vocab.size()}, {"content", "</s>"}, {"special", true}, {"normalized", false}}}}};
  std::filesystem::create_directories(dir / "tok");
  lathe::testing::write_text(dir / "tok" / "tokenizer.json", tj.dump());
  const auto tok = load_tokenizer(dir / "tok");
  const std::vector<int64_t> ids = tok->encode(text, false);
  EXPECT_EQ(tok->id_to_token(ids[0]), "line");
  const auto cfg = data_section("  source: text\n  path: " + (dir / "corpus.txt").string() +
                                "\n  seq_len: 16\n  tokenizer: " + (dir / "tok").string() + "\n");
  const DataSplits t = load_splits(cfg, 1);
  EXPECT_EQ(t.info.vocab_size, tok->vocab_size());  // 39 characters, 3 merges, </s>
  EXPECT_EQ(t.info.vocab_size, 43);
  EXPECT_EQ(t.info.eos_id, *tok->token_to_id("</s>"));
  EXPECT_EQ(t.info.pad_id, -1);
  const int64_t windows = (static_cast<int64_t>(ids.size()) - 17) / 16 + 1;
  EXPECT_EQ(t.train->size() + t.val->size() + t.test->size(), windows);
  const Example first = t.train->get(0);
  EXPECT_TRUE(first.input.equal(at::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + 16))));
  EXPECT_TRUE(first.target.equal(at::tensor(std::vector<int64_t>(ids.begin() + 1, ids.begin() + 17))));
  // A stated model.vocab_size that disagrees with the tokenizer: an error naming both.
  auto run_cfg = lathe::config::parse_config(
      "data: {source: text, path: x}\nmodel: {name: gpt2, vocab_size: 50257}\n", "run.yaml");
  expect_error<ConfigError>([&] { lathe::models::resolve_sizes(run_cfg.model, t.info); },
                            {"model.vocab_size = 50257", "a vocabulary of 43 ids",
                             "data.tokenizer " + (dir / "tok").string()});
  // A key the source does not read, and a tokenizer that is not there.
  expect_error<ConfigError>(
      [&] { data_section("  source: csv\n  path: x.csv\n  tokenizer: t.json\n"); },
      {"data.tokenizer"});
  auto missing = cfg;
  missing.tokenizer = (dir / "nowhere" / "tokenizer.json").string();
  expect_error<DataError>([&] { load_splits(missing, 1); }, {"nowhere/tokenizer.json", "no such file"});
}

TEST(Sources, ImageFolderTrainDecodesOnlyTheCropWithTheSamePixels) {
  // random_resized_crop first: the train split is the files' bytes and its transform decodes only
  // each crop, at the DCT scale whole decoding uses (220x160 JPEGs with image_size 48 decode at
  // 3/8, 83x60). Its batches must equal decoding whole, then random_resized_crop, for a seed.
  TempDir dir;
  for (const char* split : {"train", "val"})
    for (const char* cls : {"ant", "bee"})
      for (int i = 0; i < 5; ++i) {
        std::filesystem::create_directories(dir / "imgs" / split / cls);
        const at::Tensor img = at::randint(0, 255, {3, 160 + 3 * i, 220 - 5 * i}, at::kByte);
        lathe::testing::write_text(dir / "imgs" / split / cls / fmt::format("{}.{}", i, i == 4 ? "png" : "jpg"),
                                   i == 4 ? encode_png(img) : encode_jpeg(img.narrow(0, 0, i == 3 ? 1 : 3)));
      }
  const std::string common = "  source: image_folder\n  path: " + (dir / "imgs").string() +
                             "\n  image_size: 48\n  batch_size: 4\n  num_workers: 2\n";
  const auto cfg = lathe::config::parse_config(
      "data:\n" + common + "  augment: [random_resized_crop:0.2, hflip]\nmodel: {name: convnet}\n",
      "run.yaml");
  const DataSplits s = load_splits(cfg.data, 5);
  ASSERT_EQ(s.train->size(), 10);
  EXPECT_EQ(s.train->get(0).input.dim(), 1);  // the file's bytes: the crop path is used
  EXPECT_EQ(s.train->origin(3), (dir / "imgs" / "train" / "ant" / "3.jpg").string());
  EXPECT_EQ(s.val->get(0).input.dim(), 3);    // val decodes whole, as before

  // The reference: the same files decoded whole (ImageFolder, min_side = image_size), then
  // random_resized_crop, flip and normalisation, with the loader's seeds.
  auto whole = std::make_shared<ImageFolder>(dir / "imgs" / "train",
                                             ImageFolderOptions{.min_side = 48});
  EXPECT_EQ(whole->get(0).input.sizes(), (std::vector<int64_t>{3, 60, 83}));  // DCT-scaled
  const Transform reference = compose(
      {tf::random_resized_crop(48, {0.2, 1.0}), tf::horizontal_flip(),
       tf::to_float(), tf::normalize(s.mean, s.std)});
  DataLoader expected(whole, LoaderOptions().with_batch_size(4).with_shuffle(true).with_seed(5)
                                 .with_num_workers(1).with_transform(reference));
  Loaders l = make_loaders(cfg.data, s, 5);
  for (int64_t epoch : {0, 1}) {
    l.train->set_epoch(epoch);
    expected.set_epoch(epoch);
    int batches = 0;
    while (auto b = l.train->next()) {
      const auto e = expected.next();
      ASSERT_TRUE(e.has_value());
      EXPECT_EQ(b->inputs.sizes(), (std::vector<int64_t>{b->size(), 3, 48, 48}));
      EXPECT_TRUE(b->inputs.equal(e->inputs)) << "epoch " << epoch << " batch " << batches;
      EXPECT_TRUE(b->targets.equal(e->targets));
      ++batches;
    }
    EXPECT_EQ(batches, 3);
  }

  // A file that cannot be decoded: the loader's error names it.
  const std::string jpg = lathe::testing::read_text(dir / "imgs" / "train" / "ant" / "0.jpg");
  lathe::testing::write_text(dir / "imgs" / "train" / "ant" / "0.jpg", jpg.substr(0, jpg.size() / 3));
  const DataSplits cut = load_splits(cfg.data, 5);
  Loaders lc = make_loaders(cfg.data, cut, 5);
  expect_error<DataError>([&] { while (lc.train->next()) {} },
                          {(dir / "imgs" / "train" / "ant" / "0.jpg").string(), "JPEG"});
}

TEST(Sources, TextCsvTokenizesWithTheVocabulary) {
  TempDir dir;
  lathe::testing::run_oracle("wordpiece_oracle.py", dir);
  const std::string common = "  source: text_csv\n  path: " + (dir / "reviews.csv").string() +
                             "\n  vocab: " + (dir / "vocab.txt").string() +
                             "\n  target: label\n  max_length: 12\n";
  const DataSplits s =
      load_splits(data_section(common + "  val_fraction: 0\n  test_fraction: 0\n"), 1);
  EXPECT_EQ(s.train->size(), 3);
  EXPECT_EQ(s.info.classes, (std::vector<std::string>{"neg", "pos"}));
  EXPECT_EQ(s.info.input_shape(), (std::vector<int64_t>{12}));
  EXPECT_GT(s.info.vocab_size, 700);
  // A separate test file: its records become the test split as they are.
  const DataSplits t =
      load_splits(data_section(common + "  test_path: " + (dir / "reviews.csv").string() +
                               "\n  val_fraction: 0\n"),
                  1);
  EXPECT_EQ(t.test->size(), 3);
  EXPECT_TRUE(t.test->get(1).input.equal(s.train->get(1).input));
  expect_error<ConfigError>(
      [&] { load_splits(data_section("  source: text_csv\n  path: x.csv\n"), 1); }, {"data.vocab"});
}

TEST(Sources, AugmentationParametersAreBounded) {
  expect_error<ConfigError>([] { parse_augment({"random_crop:100000"}, 28); },
                            {"'random_crop:100000'", "padding must be at most the image size 28"});
  expect_error<ConfigError>([] { parse_augment({"hflip:2"}, 28); },
                            {"'hflip:2'", "probability must be in [0, 1]"});
  expect_error<ConfigError>([] { parse_augment({"random_resized_crop:0"}, 28); },
                            {"minimum scale must be in (0, 1]"});
  EXPECT_EQ(parse_augment({"random_crop:28", "hflip:1", "random_resized_crop:1"}, 28).size(), 3u);
}
