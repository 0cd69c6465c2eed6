// The `lathe` command end to end: help, exit codes, error messages, a short train and eval.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/core/fs.h"
#include "lathe/core/kernel_choice.h"
#include "lathe/core/signals.h"
#include "tests/support.h"

using lathe::testing::run_command;
using lathe::signal_name;
using lathe::testing::resume_command;
using lathe::testing::start_command;
using lathe::testing::TempDir;
using lathe::testing::training;
using lathe::testing::wait_until;

namespace {

const std::string kLathe = lathe::testing::lathe_binary();
const std::string kConfig = lathe::testing::source_dir() + "/configs/fashion_cnn.yaml";

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST(Cli, HelpForEveryCommand) {
  for (const auto* cmd : {"", "train ", "eval ", "info ", "export ", "runs ", "report "}) {
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
  EXPECT_TRUE(contains(r.output, "sizes from the data (auto; without data the defaults below): "
                                 "in_channels, num_classes (given), image_size"))
      << r.output;
  // What a run's data fills, without training.
  const std::string src = lathe::testing::source_dir();
  r = run_command(kLathe + " info --data " + src + "/configs/wine_mlp.yaml data.path=" + src +
                  "/datasets/wine.csv");
  EXPECT_EQ(r.status, 0) << r.output;
  for (const auto* part : {"data says: classification, 13 features, 3 classes (0, 1, 2)",
                           "model.in_features = 13 (from the data: 13 features after "
                           "preprocessing (alcohol, malic_acid,",
                           "model.out_features = 3 (from the data: 3 classes (0, 1, 2))"})
    EXPECT_TRUE(contains(r.output, part)) << part << "\n" << r.output;
  r = run_command(kLathe + " info --model convnet widht=3");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.output, "unknown key 'model.widht'")) << r.output;
}

// lathe info shows the CPU, LATHE_KERNELS and this machine's kernel choices from the cache file;
// a LATHE_KERNELS that is no mode is a usage error naming the accepted ones.
TEST(Cli, InfoShowsKernelChoices) {
  TempDir dir;
  const auto& machine = lathe::kernels::machine();
  const nlohmann::json file = {
      {"format", 1},
      {"machines",
       {{machine.key(),
         {{"cpu", machine.cpu},
          {"flags", machine.flags},
          {"torch", machine.torch},
          {"choices",
           {{"lstm | B=16 T<=2^6 ids V=96 E=64 H=256 layers=2 forward+backward, 1 thread",
             {{"side", "aten"}, {"lathe_ms", 2.5}, {"aten_ms", 1.25}}}}}}},
        {"another CPU [avx2] torch 2.11.0",
         {{"choices", {{"gelu_tanh | n<=2^4 forward, 1 thread", {{"side", "lathe"}}}}}}}}}};
  lathe::write_file_atomic(dir / "lathe" / "kernels.json", file.dump());
  const std::string env = "XDG_CACHE_HOME=" + dir.path().string() + " ";
  auto r = run_command(env + kLathe + " info");
  EXPECT_EQ(r.status, 0) << r.output;
  for (const std::string part :
       {"CPU: " + machine.cpu + " (" + machine.flags + ")", std::string("LATHE_KERNELS=auto"),
        (dir / "lathe" / "kernels.json").string(),
        std::string("lstm (B=16 T<=2^6 ids V=96 E=64 H=256 layers=2 forward+backward, 1 thread): "
                    "aten (lathe 2.500 ms, ATen 1.250 ms)")})
    EXPECT_TRUE(contains(r.output, part)) << part << "\n" << r.output;
  EXPECT_FALSE(contains(r.output, "gelu_tanh")) << r.output;  // another machine's
  r = run_command(env + "LATHE_KERNELS=lathe " + kLathe + " info");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "LATHE_KERNELS=lathe: lathe's everywhere")) << r.output;
  r = run_command(env + "LATHE_KERNELS=fastest " + kLathe + " info");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "LATHE_KERNELS=fastest: not a kernel mode; accepted: auto"))
      << r.output;
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

TEST(Cli, KilledWithSigkillThenResumedGivesBitIdenticalWeights) {
  TempDir dir;
  // 1080 train records / 64 = 17 steps per epoch, 34 in all; a checkpoint every 3 steps.
  const std::string args =
      " run.dir=" + dir.path().string() +
      " run.deterministic=true run.threads=2 data.limit_train=1200 data.limit_test=200"
      " data.batch_size=64 trainer.max_epochs=2 trainer.log_every_n_steps=1 model.channels=[8]"
      " model.hidden=32 checkpoint.every_n_steps=3 checkpoint.keep_last=3"
      " trainer.ema.decay=0.9 trainer.ema.warmup=true";  // the EMA weights resume exactly too
  auto r = run_command(kLathe + " train " + kConfig + args + " run.name=full");
  ASSERT_EQ(r.status, 0) << r.output;

  // The same run, killed with SIGKILL once its newest checkpoint has passed a random step.
  std::random_device rd;
  const int kill_after = 4 + static_cast<int>(rd() % 22);
  SCOPED_TRACE(fmt::format("killed after step {}", kill_after));
  const std::string cmd = kLathe + " train " + kConfig + args + " run.name=killed > " +
                          (dir / "killed.log").string() + " 2>&1";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const auto last = dir / "killed" / "checkpoints" / "last";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int status = 0;
  bool exited = false;
  while (std::chrono::steady_clock::now() < deadline) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(last, ec).string();
    if (!ec && target.size() > 5 && std::stoi(target.substr(5)) >= kill_after) break;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_FALSE(exited) << "the run ended before it could be killed: "
                       << lathe::testing::read_text(dir / "killed.log");
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));

  // Whatever the moment, every checkpoint folder on disk is complete.
  for (const auto& e : std::filesystem::directory_iterator(dir / "killed" / "checkpoints")) {
    const auto name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && !e.is_symlink())
      EXPECT_TRUE(std::filesystem::exists(e.path() / "state.json")) << name;
  }
  r = run_command(kLathe + " train " + kConfig + args + " run.name=killed --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "resumed from")) << r.output;
  // Bit-identical final weights (and so identical bytes) on CPU.
  EXPECT_EQ(lathe::testing::read_text(dir / "killed" / "model.safetensors"),
            lathe::testing::read_text(dir / "full" / "model.safetensors"));
  EXPECT_EQ(lathe::testing::read_text(dir / "killed" / "model_ema.safetensors"),
            lathe::testing::read_text(dir / "full" / "model_ema.safetensors"));
  const auto rows = [&](const std::string& run) {
    std::vector<std::string> steps;  // step losses as written, every digit
    std::ifstream in(dir / run / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      if (j["kind"] == "step") steps.push_back(j["step"].dump() + ":" + j["train/loss"].dump());
    }
    return steps;
  };
  EXPECT_EQ(rows("killed"), rows("full"));  // the log reads as if nothing had happened
}

TEST(Cli, KilledInTheMiddleOfACheckpointWriteResumesWithoutDeterministicMode) {
  TempDir dir;
  // No run.deterministic: the CPU's kernels still give the same bits at the same thread count.
  const std::string args =
      " run.dir=" + dir.path().string() +
      " run.deterministic=false run.threads=2 data.limit_train=1200 data.limit_test=200"
      " data.batch_size=64 trainer.max_epochs=2 trainer.log_every_n_steps=1 model.channels=[8]"
      " model.hidden=32 checkpoint.every_n_steps=5 checkpoint.keep_last=3";
  auto r = run_command(kLathe + " train " + kConfig + args + " run.name=full");
  ASSERT_EQ(r.status, 0) << r.output;

  // The same run with the checkpoint write of step 10 held half done (weights on disk, no
  // state.json), killed meanwhile; step 5's checkpoint is complete.
  const std::string cmd = "LATHE_FAULT_CHECKPOINT_PAUSE=60000@10 exec " + kLathe + " train " +
                          kConfig + args + " run.name=killed > " +
                          (dir / "killed.log").string() + " 2>&1";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const auto ck = dir / "killed" / "checkpoints";
  const auto half_written = [&] {
    std::error_code ec;
    if (!std::filesystem::exists(ck, ec)) return false;
    for (const auto& e : std::filesystem::directory_iterator(ck, ec)) {
      const auto name = e.path().filename().string();
      if (name.rfind(".tmp-step-00000010", 0) == 0 &&
          std::filesystem::exists(e.path() / "rng.safetensors"))
        return true;
    }
    return false;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  int status = 0;
  bool exited = false;
  while (!half_written() && std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(exited) << lathe::testing::read_text(dir / "killed.log");
  ASSERT_TRUE(half_written()) << "no checkpoint write was caught half done";
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  // The half-written folder is hidden and has no state.json; every step-* folder is complete.
  std::vector<std::string> steps;
  for (const auto& e : std::filesystem::directory_iterator(ck)) {
    const auto name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && !e.is_symlink()) {
      steps.push_back(name);
      EXPECT_TRUE(std::filesystem::exists(e.path() / "state.json")) << name;
    }
  }
  EXPECT_EQ(steps, std::vector<std::string>{"step-00000005"});
  EXPECT_EQ(std::filesystem::read_symlink(ck / "last"), "step-00000005");

  r = run_command(kLathe + " train " + kConfig + args + " run.name=killed --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "resumed from")) << r.output;
  for (const auto& e : std::filesystem::directory_iterator(ck))  // the leftover was cleaned
    EXPECT_NE(e.path().filename().string().rfind(".tmp-", 0), 0u) << e.path();
  EXPECT_EQ(lathe::testing::read_text(dir / "killed" / "model.safetensors"),
            lathe::testing::read_text(dir / "full" / "model.safetensors"));
}

TEST(Cli, ExportARunToOnnxWithMetadataTritonAndFp16) {
  TempDir dir;
  const std::string wine = lathe::testing::source_dir() + "/configs/wine_mlp.yaml";
  auto r = run_command(kLathe + " train " + wine + " run.dir=" + dir.path().string() +
                       " run.name=wine data.path=" + lathe::testing::source_dir() +
                       "/datasets/wine.csv trainer.max_epochs=2");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto run = dir / "wine";
  const auto onnx = dir / "out" / "wine.onnx";
  r = run_command(kLathe + " export " + run.string() + " -o " + onnx.string() + " --triton");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "inputs features float[batch, 13] -> outputs logits float[batch, 3]"))
      << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "out" / "triton" / "wine" / "1" / "model.onnx"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out" / "triton" / "wine" / "config.pbtxt"));
  const auto fp16 = dir / "out" / "wine16.onnx";
  r = run_command(kLathe + " export " + run.string() + " -o " + fp16.string() + " --fp16");
  ASSERT_EQ(r.status, 0) << r.output;

  // The file as onnx 1.23's full checker and onnxruntime see it.
  const std::string out = lathe::testing::run_parity(
      "onnx_oracle.py", "--describe " + onnx.string() + " " + fp16.string());
  const auto info = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_EQ(info["producer"][0], "lathe");
  EXPECT_EQ(info["ir_version"], 8);
  EXPECT_EQ(info["opsets"][""], 17);
  EXPECT_EQ(info["inputs"][0]["name"], "features");
  EXPECT_EQ(info["inputs"][0]["dims"], nlohmann::json::parse(R"(["batch", 13])"));
  EXPECT_EQ(info["outputs"][0]["dims"], nlohmann::json::parse(R"(["batch", 3])"));
  const auto& meta = info["metadata"];
  EXPECT_EQ(meta["model"], "mlp");
  EXPECT_EQ(meta["task"], "classification");
  EXPECT_EQ(meta["class_names"], R"(["0","1","2"])");  // a JSON list, in id order
  EXPECT_TRUE(contains(meta["preprocessing"].get<std::string>(), "\"scale\": \"standard\"") ||
              contains(meta["preprocessing"].get<std::string>(), "\"scale\":\"standard\""));
  EXPECT_TRUE(contains(meta["run_config"].get<std::string>(), "name: mlp"));
  // float16 weights and compute against float32: within 1e-2 on standardised inputs.
  EXPECT_LE(info["max_diff"].get<double>(), 1e-2);

  // Errors: a folder that is not a run (1), another opset (1), an unknown axis (2).
  r = run_command(kLathe + " export " + dir.path().string() + " -o " + (dir / "x.onnx").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.output, "neither a run folder (config.yaml) nor a checkpoint folder"))
      << r.output;
  r = run_command(kLathe + " export " + run.string() + " -o " + (dir / "x.onnx").string() +
                  " --opset 18");
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.output, "opset 18 requested")) << r.output;
  r = run_command(kLathe + " export " + run.string() + " --dynamic batch,time");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.output, "--dynamic: unknown axis 'time'")) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "x.onnx"));
}

TEST(Cli, EarlyStoppingFromTheConfigStopsTheRun) {
  TempDir dir;
  // min_delta 10: only the first validation counts as an improvement, so patience 1 stops the
  // run after the second epoch of 30; mode auto takes val/loss's direction (min).
  const auto r = run_command(
      kLathe + " train " + kConfig + " run.dir=" + dir.path().string() +
      " run.name=es data.limit_train=300 data.limit_test=100 data.batch_size=64"
      " model.channels=[4] model.hidden=16 trainer.max_epochs=30 trainer.progress=none"
      " trainer.early_stopping.monitor=val/loss trainer.early_stopping.patience=1"
      " trainer.early_stopping.min_delta=10");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "early stopping: val/loss did not improve")) << r.output;
  int epochs = 0;
  std::ifstream in(dir / "es" / "metrics.jsonl");
  for (std::string line; std::getline(in, line);)
    epochs += nlohmann::json::parse(line)["kind"] == "epoch";
  EXPECT_EQ(epochs, 2);
}

TEST(Cli, ExportListOpsPrintsTheTranslatedAtenOperations) {
  const auto r = run_command(kLathe + " export --list-ops");
  ASSERT_EQ(r.status, 0) << r.output;
  std::vector<std::string> ops;
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);) {
    EXPECT_EQ(line.rfind("aten::", 0), 0u) << line;
    ops.push_back(line);
  }
  EXPECT_GT(ops.size(), 50u);
  EXPECT_TRUE(std::is_sorted(ops.begin(), ops.end()));
  EXPECT_EQ(std::adjacent_find(ops.begin(), ops.end()), ops.end());  // each once
  // What the zoo's models trace to (their ONNX parity tests export through these).
  for (const char* op : {"aten::_convolution", "aten::linear", "aten::batch_norm",
                         "aten::layer_norm", "aten::lstm", "aten::gru", "aten::embedding",
                         "aten::scaled_dot_product_attention", "aten::gelu"})
    EXPECT_NE(std::find(ops.begin(), ops.end(), op), ops.end()) << op;
}

TEST(Cli, HostileInputGetsLathesOwnErrorNamingTheFile) {
  TempDir dir;
  // A device where a data file is expected: refused up front, never read forever.
  auto r = run_command(kLathe + " train " + kConfig + " run.dir=" + dir.path().string() +
                       " data.source=csv data.path=/dev/zero data.target=y");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "data error: /dev/zero: cannot open the CSV file (it is a device"))
      << r.output;
  // A key written twice in the config: an error naming both lines, not "the first one wins".
  lathe::testing::write_text(dir / "dup.yaml",
                             "data:\n  path: /x\n  batch_size: 8\n  batch_size: 16\nmodel:\n"
                             "  name: convnet\n");
  r = run_command(kLathe + " train " + (dir / "dup.yaml").string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output,
                       "dup.yaml:4: key 'data.batch_size' appears twice in one mapping "
                       "(first on line 3)"))
      << r.output;
  // A data key the idx source has no use for.
  r = run_command(kLathe + " train " + kConfig + " run.dir=" + dir.path().string() +
                  " data.seq_len=64");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "data.seq_len does not apply to source idx")) << r.output;
}

TEST(Cli, LibraryErrorsAreWrappedWithWhatLatheWasDoing) {
  TempDir dir;
  // A checkpoint folder whose state.json holds a number where the config text belongs: the JSON
  // library's type error reaches the CLI, which says what it was doing instead of printing it bare.
  std::filesystem::create_directories(dir / "ckpt");
  lathe::testing::write_text(dir / "ckpt" / "state.json", "{\"config\": 5}");
  const auto r = run_command(kLathe + " export " + (dir / "ckpt").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "error: while exporting " + (dir / "ckpt").string() +
                                     ": malformed JSON: type must be string"))
      << r.output;
  EXPECT_FALSE(contains(r.output, "[json.exception")) << r.output;
  EXPECT_FALSE(contains(r.output, "error: torch:")) << r.output;
}

TEST(Cli, RunsListsFiltersSortsAndDiffsAndReportWritesThePage) {
  TempDir dir;
  const std::string src = lathe::testing::source_dir();
  const std::string wine = src + "/configs/wine_mlp.yaml data.path=" + src +
                           "/datasets/wine.csv run.dir=" + dir.path().string() +
                           " trainer.max_epochs=2 run.threads=1 trainer.tensorboard=false";
  // Tracking at a server that is not there: training goes on, one warning says so.
  auto r = run_command(kLathe + " train " + wine +
                       " run.name=a trainer.mlflow.tracking_uri=http://127.0.0.1:9");
  ASSERT_EQ(r.status, 0) << r.output;
  size_t warnings = 0;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) warnings += contains(line, "MLflow");
  EXPECT_EQ(warnings, 1u) << r.output;
  EXPECT_TRUE(contains(r.output, "warning: MLflow tracking at http://127.0.0.1:9 stopped while "
                                 "looking up the experiment Default"))
      << r.output;
  r = run_command(kLathe + " train " + wine + " run.name=b optim.lr=0.001");
  ASSERT_EQ(r.status, 0) << r.output;
  std::filesystem::create_directories(dir / "broken");

  r = run_command(kLathe + " runs " + dir.path().string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 4) << r.output;
  EXPECT_TRUE(contains(r.output, "NAME")) << r.output;
  EXPECT_TRUE(contains(r.output, "unreadable: no config.yaml")) << r.output;

  r = run_command(kLathe + " runs " + dir.path().string() +
                  " --filter status=finished --filter model.name=mlp --sort optim.lr --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto rows = nlohmann::json::parse(r.output);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["name"], "b");  // lr 0.001 before 0.01
  EXPECT_EQ(rows[1]["name"], "a");
  EXPECT_EQ(rows[1]["config"]["trainer.mlflow.tracking_uri"], "http://127.0.0.1:9");
  EXPECT_FALSE(rows[1]["test"]["accuracy"].is_null());

  r = run_command(kLathe + " runs --diff " + (dir / "a").string() + " " + (dir / "b").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "0.01 -> 0.001")) << r.output;
  EXPECT_TRUE(contains(r.output, "trainer.mlflow.tracking_uri")) << r.output;
  r = run_command(kLathe + " runs --json --diff " + (dir / "a").string() + " " +
                  (dir / "b").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["config"].size(), 2u);

  r = run_command(kLathe + " runs " + dir.path().string() + " --filter optim.lrr=1");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.output, "no run has the key 'optim.lrr'")) << r.output;
  r = run_command(kLathe + " runs " + (dir / "nowhere").string());
  EXPECT_EQ(r.status, 2);
  r = run_command(kLathe + " runs --diff " + (dir / "a").string() + " " + (dir / "broken").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.output, "broken: no config.yaml")) << r.output;

  r = run_command(kLathe + " report " + (dir / "b").string() + " -o " + (dir / "b.html").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(lathe::testing::read_text(dir / "b.html"), "<figure id=\"plot-confusion\"><svg"));
  r = run_command(kLathe + " report " + (dir / "broken").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.output, "cannot make a report: no config.yaml")) << r.output;
}

// ---- trainer.ema through the CLI ---------------------------------------------------------------

TEST(Cli, EmaIsValidatedTestedMonitoredExportedAndEvaluated) {
  TempDir dir;
  const std::string common = " run.dir=" + dir.path().string() +
                             " data.limit_train=1200 data.limit_test=400 trainer.max_epochs=1"
                             " model.channels=[8] model.hidden=32 trainer.ema.decay=0.9";
  auto r = run_command(kLathe + " train " + kConfig + common +
                       " run.name=ema checkpoint.monitor=val_ema/accuracy");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "| ema val loss")) << r.output;
  const auto run = dir / "ema";
  // Both weights are validated (val/..., val_ema/...) and tested (test_metrics.json).
  bool val_row = false;
  std::ifstream log(run / "metrics.jsonl");
  for (std::string line; std::getline(log, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["kind"] == "val") {
      val_row = true;
      for (const char* k : {"val/accuracy", "val_ema/accuracy", "val_ema/loss", "val_ema/f1_macro"})
        EXPECT_TRUE(j.contains(k)) << k << " missing: " << line;
    }
  }
  EXPECT_TRUE(val_row);
  const auto test = nlohmann::json::parse(lathe::testing::read_text(run / "test_metrics.json"));
  ASSERT_TRUE(test.contains("ema/accuracy")) << test.dump();
  ASSERT_TRUE(test.contains("accuracy")) << test.dump();
  // The weights: the run's own and the average, also in every checkpoint; best by the EMA metric.
  EXPECT_TRUE(std::filesystem::exists(run / "model_ema.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(run / "checkpoints" / "last" / "model_ema.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(run / "checkpoints" / "best" / "model_ema.safetensors"));
  EXPECT_NE(lathe::testing::read_text(run / "model_ema.safetensors"),
            lathe::testing::read_text(run / "model.safetensors"));
  // lathe eval --weights ema measures what the run reported for the EMA weights.
  r = run_command(kLathe + " eval " + run.string() + " --weights ema");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, fmt::format("test accuracy {:.4f}",
                                             test["ema/accuracy"].get<double>())))
      << r.output << "\nexpected " << test["ema/accuracy"];
  // lathe export --weights ema, from the run and from a checkpoint.
  r = run_command(kLathe + " export " + run.string() + " --weights ema -o " +
                  (dir / "ema.onnx").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "ema.onnx"));
  r = run_command(kLathe + " export " + (run / "checkpoints" / "last").string() +
                  " --weights ema -o " + (dir / "ckpt_ema.onnx").string());
  ASSERT_EQ(r.status, 0) << r.output;

  // Monitoring the EMA metric without the EMA is a config error (2); a run without EMA weights
  // has none to evaluate (1).
  r = run_command(kLathe + " train " + kConfig + " run.dir=" + dir.path().string() +
                  " run.name=none checkpoint.monitor=val_ema/accuracy");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.output, "checkpoint.monitor = val_ema/accuracy watches the EMA weights, "
                                 "but trainer.ema is off"))
      << r.output;
  std::filesystem::remove(run / "model_ema.safetensors");
  r = run_command(kLathe + " eval " + run.string() + " --weights ema");
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.output, "no EMA weights here (--weights ema)")) << r.output;
}

// ---- preemption: SIGTERM / SIGINT stop after a step with a checkpoint ---------------------------

namespace {

/// A run with EMA (2 epochs of 17 steps) trained once straight through, and once stopped by
/// `sig` at a random moment (seeded, printed) while it trains, then continued with the command
/// it printed: the final weights and EMA weights are the same bytes.
void stop_and_resume(int sig, int expected_status) {
  TempDir dir;
  const std::string args =
      " run.dir=" + dir.path().string() +
      " run.deterministic=true run.threads=2 data.limit_train=1200 data.limit_test=200"
      " data.batch_size=64 trainer.max_epochs=2 trainer.log_every_n_steps=1 model.channels=[8]"
      " model.hidden=32 checkpoint.every_n_steps=5 trainer.ema.decay=0.9 trainer.ema.warmup=true";
  const auto [full_status, train_s] = lathe::testing::run_timed(
      kLathe + " train " + kConfig + args + " run.name=full", dir / "full", dir / "full.log");
  ASSERT_EQ(full_status, 0) << lathe::testing::read_text(dir / "full.log");

  // A random moment while it trains: after a random one of the first 24 of its 34 steps has
  // logged, plus up to one step's time. (A delay in seconds is no such moment: a run on a
  // machine with less load finishes sooner than the run it was timed on.)
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  const int after_step = std::uniform_int_distribution<int>(1, 24)(rng);
  const int delay_ms = std::uniform_int_distribution<int>(
      0, static_cast<int>(train_s * 1000 / 34))(rng);
  SCOPED_TRACE(fmt::format("seed {}: {} {} ms after step {} logged", seed, signal_name(sig),
                           delay_ms, after_step));
  const auto log = dir / "stopped.log";
  const pid_t pid =
      start_command(kLathe + " train " + kConfig + args + " run.name=stopped", log);
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_TRUE(wait_until(
      pid, [&] { return lathe::testing::logged_step(dir / "stopped", after_step); }, &status))
      << lathe::testing::read_text(log);
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  ::kill(pid, sig);
  ::waitpid(pid, &status, 0);
  const std::string out = lathe::testing::read_text(log);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  ASSERT_EQ(WEXITSTATUS(status), expected_status) << out;
  EXPECT_TRUE(contains(out, fmt::format("stopped by {} after step", signal_name(sig)))) << out;
  EXPECT_FALSE(std::filesystem::exists(dir / "stopped" / "model.safetensors"));  // not finished

  const std::string resume = resume_command(out);
  ASSERT_FALSE(resume.empty()) << "no 'to resume: lathe train ...' line:\n" << out;
  EXPECT_TRUE(contains(resume, "--resume " + (dir / "stopped" / "checkpoints").string()))
      << resume;
  const auto r = run_command(resume);
  ASSERT_EQ(r.status, 0) << resume << "\n" << r.output;
  EXPECT_TRUE(contains(r.output, "resumed from")) << r.output;
  for (const char* file : {"model.safetensors", "model_ema.safetensors"})
    EXPECT_EQ(lathe::testing::read_text(dir / "stopped" / file),
              lathe::testing::read_text(dir / "full" / file))
        << file;
}

}  // namespace

TEST(Cli, SigtermStopsAfterAStepWithACheckpointAndTheResumedRunEndsBitIdentical) {
  stop_and_resume(SIGTERM, 143);
}

TEST(Cli, SigintStopsAfterAStepWithACheckpointAndTheResumedRunEndsBitIdentical) {
  stop_and_resume(SIGINT, 130);
}

TEST(Cli, SecondSigintStopsAtOnceWithoutACheckpoint) {
  TempDir dir;
  // The stop's checkpoint write is held half done (LATHE_FAULT_CHECKPOINT_PAUSE) so that the
  // second SIGINT surely comes while the first is being honoured.
  const auto log = dir / "run.log";
  const pid_t pid = start_command(
      "env LATHE_FAULT_CHECKPOINT_PAUSE=60000@0 " + kLathe + " train " + kConfig + " run.dir=" +
          dir.path().string() +
          " run.name=twice data.limit_train=1200 data.limit_test=200 data.batch_size=64"
          " trainer.max_epochs=50 trainer.log_every_n_steps=1 model.channels=[8] model.hidden=32"
          " checkpoint.every_n_epochs=0",
      log);
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_TRUE(wait_until(pid, [&] { return training(dir / "twice"); }, &status))
      << lathe::testing::read_text(log);
  ::kill(pid, SIGINT);
  const auto ck = dir / "twice" / "checkpoints";
  const auto writing = [&] {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(ck, ec))
      if (e.path().filename().string().rfind(".tmp-step-", 0) == 0) return true;
    return false;
  };
  ASSERT_TRUE(wait_until(pid, writing, &status)) << lathe::testing::read_text(log);
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(pid, SIGINT);
  ::waitpid(pid, &status, 0);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string out = lathe::testing::read_text(log);
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 130) << out;
  EXPECT_LT(seconds, 5.0);
  EXPECT_TRUE(contains(out, "second SIGINT: stopping now, without a checkpoint")) << out;
  EXPECT_FALSE(contains(out, "to resume:")) << out;
  for (const auto& e : std::filesystem::directory_iterator(ck))  // no complete checkpoint
    EXPECT_NE(e.path().filename().string().rfind("step-", 0), 0u) << e.path();
  std::printf("[ metric   ] exited %.3f s after the second SIGINT\n", seconds);
}
