// The `lathe` command end to end: help, exit codes, error messages, a short train and eval.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/support.h"

using lathe::testing::run_command;
using lathe::testing::TempDir;

namespace {

const std::string kLathe = lathe::testing::lathe_binary();
const std::string kConfig = lathe::testing::source_dir() + "/configs/fashion_cnn.yaml";

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST(Cli, HelpForEveryCommand) {
  for (const auto* cmd : {"", "train ", "eval ", "info "}) {
    const auto r = run_command(kLathe + " " + cmd + "--help");
    EXPECT_EQ(r.status, 0) << cmd << r.output;
    EXPECT_TRUE(contains(r.output, "Usage")) << r.output;
  }
}

TEST(Cli, UsageErrorsExitWithTwo) {
  EXPECT_EQ(run_command(kLathe).status, 2);
  EXPECT_EQ(run_command(kLathe + " fly").status, 2);
  EXPECT_EQ(run_command(kLathe + " train").status, 2);  // CONFIG is required
}

TEST(Cli, ConfigErrorsNameFileLineKeyAndExitWithTwo) {
  TempDir dir;
  auto r = run_command(kLathe + " train " + (dir / "missing.yaml").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.output, "missing.yaml: cannot open the config file (no such file)"))
      << r.output;

  lathe::testing::write_text(dir / "typo.yaml",
                             "data:\n  path: /x\nmodel:\n  name: convnet\ntrainer:\n  epochs: 3\n");
  r = run_command(kLathe + " train " + (dir / "typo.yaml").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.output, "typo.yaml:6: unknown key 'trainer.epochs'")) << r.output;

  r = run_command(kLathe + " train " + kConfig + " trainer.max_epochs=many");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.output, "override 'trainer.max_epochs=many'")) << r.output;

  r = run_command(kLathe + " train " + kConfig + " max_epochs");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.output, "bad override 'max_epochs'")) << r.output;
}

TEST(Cli, DataErrorsExitWithOne) {
  TempDir dir;
  const auto r = run_command(kLathe + " train " + kConfig + " data.path=" + dir.path().string() +
                             " run.dir=" + dir.path().string());
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.output, "data error")) << r.output;
  EXPECT_TRUE(contains(r.output, "no train-images-idx3-ubyte")) << r.output;
}

TEST(Cli, InfoReportsTorchDevicesThreadsAndModels) {
  auto r = run_command(kLathe + " info");
  EXPECT_EQ(r.status, 0) << r.output;
  for (const auto* part : {"LibTorch 2.11", "CUDA available:", "cuDNN available:", "devices: cpu",
                           "threads:"})
    EXPECT_TRUE(contains(r.output, part)) << part << "\n" << r.output;
  r = run_command(kLathe + " info --model convnet num_classes=5");
  EXPECT_EQ(r.status, 0) << r.output;
  // PyTorch's sum(p.numel()) for the same layout (1→32→64 stages, 3136→128→5 head).
  EXPECT_TRUE(contains(r.output, "parameters: 421093")) << r.output;
  r = run_command(kLathe + " info --model convnet widht=3");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.output, "unknown key 'model.widht'")) << r.output;
}

TEST(Cli, TrainThenEvalAShortRun) {
  TempDir dir;
  const std::string common = " run.dir=" + dir.path().string() +
                             " run.name=short data.limit_train=1200 data.limit_test=400"
                             " trainer.max_epochs=1 model.channels=[8] model.hidden=32";
  auto r = run_command(kLathe + " train " + kConfig + common);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "epoch 1/1: train loss")) << r.output;  // plain line, no TTY
  EXPECT_TRUE(contains(r.output, "test accuracy")) << r.output;
  const auto run = dir / "short";
  const auto test = nlohmann::json::parse(lathe::testing::read_text(run / "test_metrics.json"));
  const double acc = test["accuracy"].get<double>();

  r = run_command(kLathe + " eval " + run.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, fmt::format("test accuracy {:.4f}", acc))) << r.output;

  // A truncated weights file: exit 1 and a message naming the file.
  const std::string bytes = lathe::testing::read_text(run / "model.safetensors");
  lathe::testing::write_text(dir / "cut.safetensors", bytes.substr(0, bytes.size() / 2));
  r = run_command(kLathe + " eval " + run.string() + " --weights " + (dir / "cut.safetensors").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.output, "cut.safetensors: truncated")) << r.output;

  // Weights of another architecture: exit 1 and the mismatching tensor named.
  r = run_command(kLathe + " eval " + run.string() + " model.hidden=16");
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.output, "classifier.2.weight: file [32, 1568] vs model [16, 1568]"))
      << r.output;
}
