// trainer.profile: the Kineto trace of a window of steps parses as Chrome trace events and names
// the model's parts (the convnet's, and a tiny resnet's and gpt2's layers); the tables count
// exactly the recorded steps; bad windows are errors.
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/data/tensor_data.h"
#include "lathe/optim/optimizer.h"
#include "lathe/run/run.h"
#include "lathe/train/profiler.h"
#include "lathe/train/trainer.h"
#include "models/registry.h"
#include "tests/support.h"

using lathe::testing::expect_error;
using lathe::testing::TempDir;
namespace config = lathe::config;

namespace {

/// The demo's convnet on 640 Fashion-MNIST images: 5 steps of 128 in one epoch.
config::RunConfig profiled_run(const TempDir& dir, const std::string& steps) {
  return config::load_config(
      lathe::testing::source_dir() + "/configs/fashion_cnn.yaml",
      {"run.dir=" + dir.path().string(), "run.name=p", "run.threads=2", "data.limit_train=640",
       "data.limit_test=200", "trainer.max_epochs=1",
       "trainer.progress=none", "trainer.tensorboard=false", "model.channels=[8]",
       "model.hidden=16", "trainer.profile.steps=" + steps});
}

const nlohmann::json* row(const nlohmann::json& rows, const std::string& name) {
  for (const auto& r : rows)
    if (r["name"] == name) return &r;
  return nullptr;
}

}  // namespace

TEST(Profiler, TraceNamesTheModelsPartsAndTheTablesCountTheRecordedSteps) {
  TempDir dir;
  lathe::run::train_from_config(profiled_run(dir, "[2, 3]"));
  const auto folder = dir / "p" / "profile";

  // trace.json: Chrome trace events (what chrome://tracing and Perfetto read).
  const auto trace = nlohmann::json::parse(lathe::testing::read_text(folder / "trace.json"));
  ASSERT_TRUE(trace.contains("traceEvents") && trace["traceEvents"].is_array());
  std::set<std::string> names;
  for (const auto& e : trace["traceEvents"]) {
    ASSERT_TRUE(e.contains("ph") && e.contains("name")) << e.dump();
    if (e["ph"] == "X") {
      EXPECT_TRUE(e.contains("ts") && e.contains("dur")) << e.dump();
      names.insert(e["name"].get<std::string>());
    }
  }
  EXPECT_TRUE(names.count("features") && names.count("classifier"));  // the model's parts
  EXPECT_TRUE(names.count("aten::convolution") || names.count("aten::conv2d"));
  bool backward = false;
  for (const auto& n : names) backward |= n.find("Backward") != std::string::npos;
  EXPECT_TRUE(backward) << "the backward pass is recorded too";

  // profile.json: each model part ran once per recorded step (2 steps, no validation inside).
  const auto summary = nlohmann::json::parse(lathe::testing::read_text(folder / "profile.json"));
  EXPECT_EQ(summary["first_step"], 2);
  EXPECT_EQ(summary["last_step"], 3);
  for (const char* part : {"features", "classifier"}) {
    const auto* r = row(summary["modules"], part);
    ASSERT_NE(r, nullptr) << part << " in " << summary["modules"].dump();
    EXPECT_EQ((*r)["calls"], 2) << part;
  }
  const auto* conv = row(summary["operators"], "aten::convolution");
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ((*conv)["calls"], 2);  // one conv stage, one forward per step
  EXPECT_TRUE(summary["kernels"].empty());  // the CPU has no device kernels
  double self_sum = 0;
  for (const auto& r : summary["operators"]) {
    EXPECT_LE(r["self_us"].get<double>(), r["total_us"].get<double>() + 1e-6) << r.dump();
    EXPECT_GE(r["self_us"].get<double>(), -1e-6) << r.dump();
    self_sum += r["self_us"].get<double>();
  }
  // Self times partition the host time: on one thread they cannot exceed the window's span.
  EXPECT_GT(self_sum, 0);
  const std::string text = lathe::testing::read_text(folder / "profile.txt");
  EXPECT_NE(text.find("Operators by self time"), std::string::npos) << text;
  EXPECT_NE(text.find("classifier"), std::string::npos) << text;
}

TEST(Profiler, AWindowAfterTheRunRecordsNothingAndABadWindowIsAConfigError) {
  TempDir dir;
  lathe::run::train_from_config(profiled_run(dir, "[50, 60]"));  // the run has 5 steps
  EXPECT_FALSE(std::filesystem::exists(dir / "p" / "profile"));

  for (const char* bad : {"[3, 2]", "[0, 4]", "[5]"})
    expect_error<lathe::ConfigError>([&] { profiled_run(dir, bad); },
                                     {"trainer.profile.steps", "1 <= first <= last"});
}

TEST(Profiler, TablesSortBySelfTimeAndSayWhatIsLeftOut) {
  const std::vector<lathe::train::ProfileRow> rows = {
      {"aten::addmm", 3, 3000.0, 4000.0}, {"aten::relu", 3, 1000.0, 1000.0}};
  const std::string t = lathe::train::format_profile_table("Operators", rows, 1);
  EXPECT_NE(t.find("3.000  75.0%      4.000        3  aten::addmm"), std::string::npos) << t;
  EXPECT_EQ(t.find("aten::relu"), std::string::npos) << t;
  EXPECT_NE(t.find("1 more in profile.json"), std::string::npos) << t;
}

namespace {

/// Profiles step 2 of a 2-step run of zoo model `name` (key=value `options`) on random batches
/// of 4 records shaped `input` and returns the model parts the profile counted, with their calls.
std::map<std::string, int64_t> profiled_parts(const std::string& name,
                                     const std::vector<std::string>& options,
                                     const std::string& task, std::vector<int64_t> input,
                                     int64_t classes) {
  TempDir dir;
  at::manual_seed(0);
  lathe::config::RunConfig cfg;
  cfg.model = config::parse_model_section(name, options);
  auto model = lathe::models::build_model(cfg.model);
  cfg.task.kind = task;
  cfg.trainer.max_epochs = 1;
  cfg.trainer.progress = "none";
  auto optimizer = lathe::optim::make_optimizer(cfg.optim, *model.ptr());
  input.insert(input.begin(), 8);  // (N, ...)
  const at::Tensor x = task == "lm" ? at::randint(classes, input, at::kLong) : at::randn(input);
  const at::Tensor y = task == "lm" ? at::randint(classes, input, at::kLong)
                                    : at::randint(classes, {input[0]}, at::kLong);
  lathe::data::TensorLoader loader({x, y}, 4, /*shuffle=*/false, 0);
  lathe::train::Trainer trainer(cfg.trainer, c10::Device("cpu"), model,
                                lathe::train::Task(cfg.task), optimizer,
                                lathe::train::make_schedules(cfg.optim, 2, 2));
  auto profiler =
      std::make_shared<lathe::train::ProfilerCallback>(2, 2, dir / "profile", c10::Device("cpu"));
  trainer.add_callback(profiler);
  trainer.fit(loader, nullptr);

  std::map<std::string, int64_t> parts;
  for (const auto& r : profiler->summary().modules) parts[r.name] = r.calls;
  // The trace (what Perfetto shows) carries the same names as spans.
  const auto trace =
      nlohmann::json::parse(lathe::testing::read_text(dir / "profile" / "trace.json"));
  std::set<std::string> spans;
  for (const auto& e : trace["traceEvents"])
    if (e["ph"] == "X") spans.insert(e["name"].get<std::string>());
  for (const auto& [p, calls] : parts)
    EXPECT_TRUE(spans.count(p)) << name << ": " << p << " not in the trace";
  return parts;
}

}  // namespace

TEST(Profiler, ZooResNetAndGpt2NameTheirLayers) {
  const auto resnet =
      profiled_parts("resnet18", {"num_classes=3", "small_input=true", "layers=[1, 2, 1, 1]"},
                     "classification", {3, 8, 8}, 3);
  // Each part once in the one recorded step; exactly the blocks the model has (no layer2.2).
  const std::map<std::string, int64_t> resnet_parts = {
      {"stem", 1},     {"layer1.0", 1}, {"layer2.0", 1}, {"layer2.1", 1},
      {"layer3.0", 1}, {"layer4.0", 1}, {"fc", 1}};
  EXPECT_EQ(resnet, resnet_parts);

  const auto gpt2 = profiled_parts(
      "gpt2", {"vocab_size=11", "n_positions=8", "n_embd=8", "n_layer=2", "n_head=2"}, "lm", {8},
      11);
  // attn and mlp: once in each of the 2 blocks.
  const std::map<std::string, int64_t> gpt2_parts = {
      {"embeddings", 1}, {"h.0", 1}, {"h.1", 1}, {"attn", 2}, {"mlp", 2}, {"lm_head", 1}};
  EXPECT_EQ(gpt2, gpt2_parts);
}
