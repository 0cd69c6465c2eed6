// The run area: every source through the one data entry point, sizes from the data (inferred and
// mismatched), one task answer, keys a source does not use, and export at the run's own sizes.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "lathe/ckpt/safetensors.h"
#include "lathe/ckpt/torch_pickle.h"
#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/data/image.h"
#include "lathe/run/export.h"
#include "lathe/run/run.h"
#include "lathe/train/task.h"
#include "models/registry.h"
#include "tests/support.h"

namespace {

using lathe::ConfigError;
using lathe::testing::expect_error;
using lathe::testing::TempDir;
namespace config = lathe::config;
namespace run = lathe::run;

/// A config from YAML text plus overrides, named run.yaml in errors.
config::RunConfig parse(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return config::parse_config(yaml, "run.yaml", overrides);
}

/// Loads the config's data and resolves the config from it; returns the resolved config.
config::RunConfig resolved(config::RunConfig cfg, run::RunLoaders* keep = nullptr) {
  run::RunLoaders data = run::make_run_loaders(cfg.data, cfg.run.seed);
  run::resolve_from_data(cfg, data);
  if (keep != nullptr) *keep = std::move(data);
  return cfg;
}

std::string param(const config::RunConfig& cfg, const std::string& key) {
  const auto& values = cfg.model.params.values();
  const auto it = values.find(key);
  return it == values.end() ? "<absent>" : it->second.items.front();
}

/// image_folder fixture: `per_class` random images of each class, of varied sizes.
std::filesystem::path image_folder(const TempDir& dir, int per_class) {
  for (const char* cls : {"ant", "bee"})
    for (int i = 0; i < per_class; ++i) {
      std::filesystem::create_directories(dir / "imgs" / cls);
      const at::Tensor img = at::randint(0, 255, {3, 40 + i, 50 - i}, at::kByte);
      lathe::testing::write_text(dir / "imgs" / cls / fmt::format("{}.png", i),
                                 lathe::data::encode_png(img));
    }
  return dir / "imgs";
}

/// The user story: numeric columns, one categorical column, string labels, holes.
std::filesystem::path wine_csv(const TempDir& dir) {
  std::string text = "alcohol,colour,ash,cultivar\n";
  const char* names[] = {"barbera", "barolo", "grignolino"};
  const char* colours[] = {"red", "rose", "white"};
  for (int i = 0; i < 30; ++i) {
    const std::string alcohol = i % 7 == 3 ? "" : fmt::format("{:.1f}", 12.0 + 0.1 * i);
    const std::string colour = i % 11 == 5 ? "" : colours[(i / 2) % 3];
    text += fmt::format("{},{},{:.2f},{}\n", alcohol, colour, 2.0 + 0.03 * i, names[i % 3]);
  }
  lathe::testing::write_text(dir / "wine.csv", text);
  return dir / "wine.csv";
}

run::RunExportOptions export_options(const std::filesystem::path& output,
                                     std::vector<std::string> dynamic) {
  run::RunExportOptions o;
  o.output = output;
  o.dynamic = std::move(dynamic);
  return o;
}

}  // namespace

TEST(RunSizes, IdxFillsChannelsClassesAndSideAndHonoursAugmentAndImageSize) {
  const std::string yaml = std::string("data: {path: ") + lathe::testing::kFashionMnist +
                           ", limit_train: 400, limit_test: 100, image_size: 32, num_workers: 1,"
                           " batch_size: 8, augment: [random_crop, hflip]}\n"
                           "model: {name: convnet, channels: [4], hidden: 8}\n";
  run::RunLoaders data;
  const auto cfg = resolved(parse(yaml), &data);
  EXPECT_EQ(cfg.task.kind, "classification");
  EXPECT_EQ(param(cfg, "in_channels"), "1");
  EXPECT_EQ(param(cfg, "num_classes"), "10");
  EXPECT_EQ(param(cfg, "image_size"), "32");
  EXPECT_EQ(cfg.data.image_size, 32);
  EXPECT_EQ(data.info.input_shape(), (std::vector<int64_t>{1, 32, 32}));
  // idx goes through the worker loader: resized to image_size, augmented, normalised.
  const auto batch = data.train->batch(0);
  EXPECT_EQ(batch.inputs.sizes(), (std::vector<int64_t>{8, 1, 32, 32}));
  EXPECT_NEAR(data.val->batch(0).inputs.mean().item<double>(), 0.0, 0.3);
  // The built model takes the data's batches.
  auto model = lathe::models::build_model(cfg.model);
  EXPECT_EQ(model.forward<at::Tensor>(batch.inputs).sizes(), (std::vector<int64_t>{8, 10}));

  expect_error<ConfigError>([&] { resolved(parse(yaml, {"model.num_classes=5"})); },
                            {"override 'model.num_classes=5': model.num_classes = 5, but the data "
                             "has 10 classes (0, 1, "});
  expect_error<ConfigError>([&] { resolved(parse(yaml, {"model.image_size=28"})); },
                            {"model.image_size = 28, but the data has 32x32 images"});
  // data.classes keeps and relabels a subset: 4 classes named by their ids in the files.
  const auto tops = resolved(parse(yaml, {"data.classes=[0, 2, 4, 6]"}));
  EXPECT_EQ(param(tops, "num_classes"), "4");
  expect_error<ConfigError>(
      [&] {
        resolved(parse(yaml, {"data.classes=[0, 2, 4, 6]", "model.num_classes=10"}));
      },
      {"model.num_classes = 10, but the data has 4 classes (0, 2, 4, 6)"});
}

namespace {

/// An IDX file: magic (0, 0, 0x08 = ubyte, dims), the sizes as big-endian int32, the bytes.
void write_idx(const std::filesystem::path& file, const std::vector<int32_t>& dims,
               const std::vector<uint8_t>& bytes) {
  std::string out{0, 0, 0x08, static_cast<char>(dims.size())};
  for (int32_t d : dims)
    for (int shift : {24, 16, 8, 0}) out.push_back(static_cast<char>((d >> shift) & 0xff));
  out.append(bytes.begin(), bytes.end());
  lathe::testing::write_text(file, out);
}

}  // namespace

TEST(RunSizes, IdxTestLabelsOutsideTheTrainingClassesAreADataErrorNamingFileAndRecord) {
  TempDir dir;
  write_idx(dir / "train-images-idx3-ubyte", {4, 2, 2}, std::vector<uint8_t>(16, 7));
  write_idx(dir / "train-labels-idx1-ubyte", {4}, {0, 1, 0, 1});
  write_idx(dir / "t10k-images-idx3-ubyte", {2, 2, 2}, std::vector<uint8_t>(8, 9));
  write_idx(dir / "t10k-labels-idx1-ubyte", {2}, {1, 2});
  const auto cfg = parse("data: {path: " + dir.path().string() +
                         ", val_fraction: 0}\n"
                         "model: {name: convnet}\n");
  expect_error<lathe::DataError>(
      [&] { run::make_run_loaders(cfg.data, 0); },
      {"t10k-labels-idx1-ubyte: record 1 has class id 2, but the training split has 2 classes"});
}

TEST(RunSizes, CsvFillsFeaturesAndClassesAndGlobalStepsFitEachColumnsType) {
  TempDir dir;
  const std::string yaml = "data: {source: csv, path: " + wine_csv(dir).string() +
                           ", target: cultivar, impute: median, scale: standard, outliers: iqr,"
                           " val_fraction: 0.2, test_fraction: 0.2, num_workers: 0}\n"
                           "model: {name: mlp, hidden: [4]}\n";
  run::RunLoaders data;
  const auto cfg = resolved(parse(yaml), &data);
  EXPECT_EQ(cfg.task.kind, "classification");
  EXPECT_EQ(cfg.data.task, "classification");
  EXPECT_EQ(
      data.info.feature_names,
      (std::vector<std::string>{"alcohol", "colour=red", "colour=rose", "colour=white", "ash"}));
  EXPECT_EQ(param(cfg, "in_features"), "5");
  EXPECT_EQ(param(cfg, "out_features"), "3");
  EXPECT_EQ(data.train->batch(0).inputs.size(1), 5);
  expect_error<ConfigError>(
      [&] { resolved(parse(yaml, {"model.out_features=2"})); },
      {"override 'model.out_features=2': model.out_features = 2, but the data has 3 classes "
       "(barbera, barolo, grignolino)"});
  expect_error<ConfigError>(
      [&] { resolved(parse(yaml, {"model.in_features=4"})); },
      {"model.in_features = 4, but the data has 5 features after "
       "preprocessing (alcohol, colour=red, colour=rose, colour=white, ash)"});
  // task.kind and data.task are one answer: the kind reads the data as that task...
  const auto reg = resolved(parse(yaml, {"data.target=ash", "task.kind=regression"}));
  EXPECT_EQ(reg.data.task, "regression");
  EXPECT_EQ(param(reg, "out_features"), "1");
  // ...and two answers that disagree are refused before anything is read.
  expect_error<ConfigError>(
      [&] {
        parse(yaml, {"data.task=classification", "task.kind=regression"});
      },
      {"task.kind = regression, but data.task = classification", "one answer"});
}

TEST(RunSizes, ImageFolderFillsClassesAndChannels) {
  TempDir dir;
  const std::string yaml = "data: {source: image_folder, path: " + image_folder(dir, 4).string() +
                           ", image_size: 24, val_fraction: 0.25, test_fraction: 0.25,"
                           " num_workers: 0}\nmodel: {name: resnet18, small_input: true}\n";
  run::RunLoaders data;
  const auto cfg = resolved(parse(yaml), &data);
  EXPECT_EQ(param(cfg, "num_classes"), "2");
  EXPECT_EQ(param(cfg, "in_channels"), "3");
  EXPECT_EQ(data.info.classes, (std::vector<std::string>{"ant", "bee"}));
  EXPECT_EQ(data.info.input_shape(), (std::vector<int64_t>{3, 24, 24}));
  expect_error<ConfigError>([&] { resolved(parse(yaml, {"model.in_channels=1"})); },
                            {"model.in_channels = 1, but the data has images with 3 channels"});
  expect_error<ConfigError>([&] { resolved(parse(yaml, {"model.num_classes=1000"})); },
                            {"model.num_classes = 1000, but the data has 2 classes (ant, bee)"});
}

TEST(RunSizes, TextFillsTheByteVocabularyAndIsALanguageModelTask) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 40; ++i) text += fmt::format("line {} of the corpus.\n", i);
  lathe::testing::write_text(dir / "corpus.txt", text);
  const std::string yaml = "data: {source: text, path: " + (dir / "corpus.txt").string() +
                           ", seq_len: 16, num_workers: 0}\n"
                           "model: {name: lstm_lm, embedding_dim: 4, hidden_size: 8}\n";
  const auto cfg = resolved(parse(yaml));
  EXPECT_EQ(cfg.task.kind, "lm");
  EXPECT_EQ(param(cfg, "vocab_size"), "256");
  expect_error<ConfigError>([&] { resolved(parse(yaml, {"model.vocab_size=100"})); },
                            {"model.vocab_size = 100, but the data has a vocabulary of 256 ids "
                             "(byte-level text)"});
  expect_error<ConfigError>([&] { parse(yaml, {"task.kind=classification"}); },
                            {"task.kind = classification, but source text gives lm data"});
}

TEST(RunSizes, TextCsvFillsTheWordPieceVocabularyAndLabels) {
  TempDir dir;
  lathe::testing::write_text(dir / "vocab.txt",
                             "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ngood\nbad\nfilm\nplot\nacting\n");
  std::string rows = "text,label\n";
  for (int i = 0; i < 12; ++i)
    rows += i % 2 ? "good film good acting,pos\n" : "bad plot bad film,neg\n";
  lathe::testing::write_text(dir / "reviews.csv", rows);
  const std::string yaml =
      "data: {source: text_csv, path: " + (dir / "reviews.csv").string() +
      ", vocab: " + (dir / "vocab.txt").string() +
      ", target: label, max_length: 8, val_fraction: 0.25, test_fraction: 0.25, num_workers: 0}\n"
      "model: {name: bert_classifier, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2,"
      " intermediate_size: 16, max_position_embeddings: 8}\n";
  run::RunLoaders data;
  const auto cfg = resolved(parse(yaml), &data);
  EXPECT_EQ(param(cfg, "vocab_size"), "10");
  EXPECT_EQ(param(cfg, "num_labels"), "2");
  EXPECT_EQ(data.info.seq_len, 8);
  expect_error<ConfigError>([&] { resolved(parse(yaml, {"model.num_labels=3"})); },
                            {"model.num_labels = 3, but the data has 2 classes (neg, pos)"});
  expect_error<ConfigError>([&] { resolved(parse(yaml, {"model.vocab_size=30522"})); },
                            {"model.vocab_size = 30522, but the data has a vocabulary of 10 ids "
                             "(data.vocab)"});
}

TEST(DataKeys, EachSourceRefusesTheKeysItDoesNotUseAndUnknownNames) {
  expect_error<ConfigError>(
      [] {
        parse(
            "data:\n  source: csv\n  path: a.csv\n  target: y\n  augment: [hflip]\n"
            "model: {name: mlp}\n");
      },
      {"run.yaml:5: data.augment does not apply to source csv", "idx, image_folder"});
  expect_error<ConfigError>([] { parse("data: {path: x, target: y}\nmodel: {name: convnet}\n"); },
                            {"data.target does not apply to source idx"});
  expect_error<ConfigError>(
      [] { parse("data: {source: image_folder, path: x, classes: [1]}\nmodel: {name: vit}\n"); },
      {"data.classes does not apply to source image_folder"});
  expect_error<ConfigError>(
      [] { parse("data: {source: text, path: x, image_size: 32}\nmodel: {name: gpt2}\n"); },
      {"data.image_size does not apply to source text"});
  expect_error<ConfigError>(
      [] { parse("data:\n  path: x\n  augment: [jitter]\nmodel: {name: convnet}\n"); },
      {"run.yaml:3: data.augment: unknown augmentation 'jitter'; known: random_crop[:pad]"});
  expect_error<ConfigError>(
      [] { parse("data: {path: x}\nmodel: {name: convnet}\ntask: {loss: huber}\n"); },
      {"task.loss = 'huber' does not fit task.kind classification: use one of cross_entropy"});
  // The resolved config of a run reads back as it is.
  const auto cfg = parse("data: {source: csv, path: a.csv, target: y}\nmodel: {name: mlp}\n",
                         {"task.kind=regression"});
  const auto again = config::parse_config(config::to_yaml(cfg), "resolved.yaml");
  EXPECT_EQ(again.task.kind, "regression");
  EXPECT_EQ(again.data.task, "regression");
}

TEST(RunExport, ResNet18AndMobileNetV2TrainedAt64PxRunInOnnxruntimeAtTheirSizes) {
  TempDir dir;
  const auto images = image_folder(dir, 6);
  nlohmann::json manifest{{"models", nlohmann::json::array()}};
  for (const std::string name : {"resnet18", "mobilenet_v2"}) {
    SCOPED_TRACE(name);
    auto cfg = parse("data: {source: image_folder, path: " + images.string() +
                         ", image_size: 64, val_fraction: 0.25, test_fraction: 0.25, batch_size: 4,"
                         " eval_batch_size: 8, num_workers: 0}\n"
                         "model: {name: " +
                         name + "}\n",
                     {"run.dir=" + dir.path().string(), "run.name=" + name, "run.threads=2",
                      "trainer.max_steps=1", "trainer.progress=none", "trainer.tensorboard=false",
                      "checkpoint.every_n_epochs=0", "checkpoint.save_best=false"});
    run::train_from_config(cfg);
    const auto run_dir = dir / name;
    // Fixed axes: the run's 64 px, never the model's 224.
    const auto fixed =
        run::export_run(run_dir, export_options(dir / (name + "_64.onnx"), {"batch"}));
    EXPECT_EQ(fixed.inputs.at(0).shape, (std::vector<std::string>{"batch", "3", "64", "64"}));
    const auto file = dir / (name + ".onnx");
    const auto dynamic =
        run::export_run(run_dir, export_options(file, {"batch", "height", "width"}));
    EXPECT_EQ(dynamic.inputs.at(0).shape,
              (std::vector<std::string>{"batch", "3", "height", "width"}));

    // LibTorch's outputs of the trained weights at 64 px and at other sizes.
    const auto resolved_cfg = config::load_config(run_dir / "config.yaml");
    auto model = lathe::models::build_model(resolved_cfg.model);
    lathe::ckpt::load_weights_any(*model.ptr(), run_dir / "model.safetensors", true);
    model.ptr()->eval();
    for (const char* other : {"model_64", "model_dyn"}) {
      nlohmann::json entry{
          {"name", name + "/" + other},
          {"onnx", (other == std::string("model_64") ? dir / (name + "_64.onnx") : file).string()},
          {"cases", nlohmann::json::array()}};
      const std::vector<std::vector<int64_t>> shapes =
          other == std::string("model_64")
              ? std::vector<std::vector<int64_t>>{{2, 3, 64, 64}, {5, 3, 64, 64}}
              : std::vector<std::vector<int64_t>>{{2, 3, 64, 64}, {1, 3, 96, 96}, {3, 3, 48, 80}};
      for (size_t c = 0; c < shapes.size(); ++c) {
        const at::Tensor x = at::randn(shapes[c]);
        at::NoGradGuard no_grad;
        const auto case_file = dir / fmt::format("{}.{}.{}.safetensors", name, other, c);
        lathe::ckpt::save_safetensors(
            case_file, {{"images", x}, {"expected", model.forward<at::Tensor>(x).contiguous()}});
        entry["cases"].push_back(case_file.string());
      }
      manifest["models"].push_back(entry);
    }
  }
  // --dynamic height on a model whose head needs one size is refused, naming the axis.
  expect_error<ConfigError>(
      [&] {
        TempDir d2;
        auto cfg = parse(
            "data: {source: image_folder, path: " + images.string() +
                ", image_size: 16, num_workers: 0}\nmodel: {name: convnet, "
                "channels: [4], hidden: 8}\n",
            {"run.dir=" + d2.path().string(), "run.name=c", "trainer.max_steps=1",
             "trainer.progress=none", "checkpoint.every_n_epochs=0", "checkpoint.save_best=false"});
        run::train_from_config(cfg);
        run::export_run(d2 / "c", export_options({}, {"batch", "height"}));
      },
      {"--dynamic height: model convnet takes no other height"});

  std::ofstream(dir / "manifest.json") << manifest.dump(1);
  const std::string out =
      lathe::testing::run_parity("onnx_oracle.py", (dir / "manifest.json").string());
  std::istringstream lines(out);
  int results = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    const auto r = nlohmann::json::parse(line);
    SCOPED_TRACE(r["name"].get<std::string>());
    ++results;
    EXPECT_EQ(r["unused_initializers"].get<int64_t>(), 0);
    for (const auto& d : r["diffs"]) EXPECT_LE(d.get<double>(), 1e-4);
    std::printf("  %-24s max |onnxruntime - libtorch| = %s at input shapes %s\n",
                r["name"].get<std::string>().c_str(), r["diffs"].dump().c_str(),
                r["input_shapes"].dump().c_str());
  }
  EXPECT_EQ(results, 4);
}

TEST(RunSizes, AClassIdOutsideTheModelsOutputsIsATrainErrorNotTorchs) {
  // A module outside the zoo has no size options to check; its loss still says what is wrong.
  const lathe::train::Task task;
  expect_error<lathe::TrainError>(
      [&] { task.loss(at::zeros({2, 2}), at::tensor({0, 2}, at::kLong)); },
      {"a class id is outside the model's 2 outputs", "num_classes / out_features / num_labels"});
}

namespace {

/// A user's model for the registration tests: features (B, F) → logits (B, K).
struct UserNetImpl : torch::nn::Module {
  UserNetImpl(int64_t in, int64_t classes)
      : fc(register_module("fc", torch::nn::Linear(in, classes))) {}
  at::Tensor forward(const at::Tensor& x) { return fc(x); }
  torch::nn::Linear fc;
};
TORCH_MODULE(UserNet);

lathe::models::ModelSpec user_net_spec(const std::string& name) {
  using lathe::models::DataSize;
  return {name, "a linear layer (test_run)",
          {{"in_features", DataSize::in_features}, {"num_classes", DataSize::classes}},
          [](const config::Params& p) {
            UserNet net(p.get_int("in_features", 2), p.get_int("num_classes", 2));
            p.check_all_used();
            return torch::nn::AnyModule(net);
          }};
}

}  // namespace

TEST(RegisterModel, AUserModelTrainsFromAConfigWithSizesFromTheDataAndExports) {
  TempDir dir;
  lathe::models::register_model(
      user_net_spec("test_user_net"),
      [](const torch::nn::Module& m, const lathe::models::SignatureSizes&) {
        const int64_t in = dynamic_cast<const UserNetImpl&>(m).fc->options.in_features();
        return lathe::models::ModelSignature{{{"features", {2, in}, 0, {{0, "batch"}}}},
                                             "logits"};
      });
  const auto names = lathe::models::registered_models();
  EXPECT_NE(std::find(names.begin(), names.end(), "test_user_net"), names.end());
  auto cfg = parse("data: {source: csv, path: " + wine_csv(dir).string() +
                       ", target: cultivar, impute: mean, batch_size: 8, num_workers: 0}\n"
                       "model: {name: test_user_net}\n",
                   {"run.dir=" + dir.path().string(), "run.name=user", "trainer.max_epochs=2",
                    "trainer.progress=none", "trainer.tensorboard=false"});
  // The data fills the user model's sizes as it fills a zoo model's.
  const auto r = resolved(cfg);
  EXPECT_EQ(param(r, "num_classes"), "3");
  const std::string features = param(r, "in_features");
  EXPECT_GT(std::stoi(features), 1);
  const auto result = run::train_from_config(cfg);
  EXPECT_EQ(result.history.size(), 2u);
  EXPECT_TRUE(result.test.count("accuracy"));
  const auto report = run::export_run(dir / "user", export_options(dir / "user.onnx", {"batch"}));
  EXPECT_EQ(report.inputs.at(0).name, "features");
  EXPECT_EQ(report.inputs.at(0).shape, (std::vector<std::string>{"batch", features}));
  EXPECT_EQ(report.outputs.at(0).name, "logits");

  // A misspelt option of the user's model names the file and the key; an unknown name lists
  // the registered models beside the zoo.
  expect_error<ConfigError>(
      [] {
        lathe::models::build_model(config::parse_model_section("test_user_net", {"in_featres=3"}));
      },
      {"unknown key 'model.in_featres'", "did you mean 'in_features'?"});
  expect_error<ConfigError>(
      [] { lathe::models::build_model(config::parse_model_section("test_user_nett", {})); },
      {"unknown model 'test_user_nett'", "did you mean 'test_user_net'?",
       "registered: test_user_net"});
}

TEST(RegisterModel, NamesAreUniqueAndExportWithoutASignatureSaysWhatIsMissing) {
  expect_error<ConfigError>([] { lathe::models::register_model(user_net_spec("resnet18")); },
                            {"'resnet18' is a zoo model already"});
  lathe::models::register_model(user_net_spec("test_unsigned_net"));
  expect_error<ConfigError>(
      [] { lathe::models::register_model(user_net_spec("test_unsigned_net")); },
      {"a model named 'test_unsigned_net' is registered already"});
  expect_error<ConfigError>([] { lathe::models::register_model({"nameless", "", {}, {}}); },
                            {"needs a name and a build function", "no build function"});
  const auto section = config::parse_model_section("test_unsigned_net", {"in_features=3"});
  auto model = lathe::models::build_model(section);
  expect_error<lathe::ExportError>(
      [&] { lathe::models::model_signature(section, *model.ptr(), {}); },
      {"model 'test_unsigned_net' was registered without a signature"});
}
