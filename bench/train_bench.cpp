// train_bench: lathe's Trainer against a plain PyTorch eager loop (bench/train_bench.py) on the
// same machine, torch, model, batch, dtype and thread count; prints seconds per training step
// (forward, loss, backward, optimizer step) and lathe / PyTorch per case, and MFU on CUDA.
//
//   build/dev/bench/train_bench [--device cpu|cuda] [--threads N] [--cases mlp,gpt_tiny]
//                               [--python .venv/bin/python] [--script bench/train_bench.py]
//                               [--rounds 3] [--quick] [--profile DIR] [--clock wall|cpu]
//                               (run from the repository root)
//
// --clock cpu (CPU only): each side's process CPU time instead of wall time. With --threads 1
// on a machine shared with other work, wall time also counts the time the scheduler gave to
// others; CPU time counts the work done (both sides alike), so ratios stay comparable under load.
//
// --profile DIR: one round; each side profiles two untimed steps, lathe with
// trainer.profile's profiler (DIR/CASE/lathe/profile.txt, .json, trace.json), PyTorch with
// torch.profiler (DIR/CASE/torch/profile.txt, ops.json, trace.json): the operator tables side by
// side show what one step does that the other does not.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/version.h>

#include "bench/bench_util.h"
#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/core/gpu.h"
#include "lathe/optim/optimizer.h"
#include "lathe/train/profiler.h"
#include "lathe/train/trainer.h"
#include "models/registry.h"

using nlohmann::json;

namespace {

/// One benchmark case: a zoo model, its batch, and how long to measure.
struct Case {
  std::string name, what, model;
  std::vector<std::string> options;  ///< the model's key=value options
  json py_options;                   ///< the same for train_bench.py
  std::string task;                  ///< classification | lm
  std::string input_kind;            ///< float | ids
  std::vector<int64_t> input;        ///< one record's shape
  int64_t batch = 0, classes = 0;
  int64_t warmup = 3, steps = 5, repeats = 5;
  bool gpu_only = false;
  bool channels_last = false;  ///< on CUDA (lathe's trainer.channels_last=auto)
};

std::vector<Case> cases(bool cuda) {
  std::vector<Case> c;
  c.push_back({"mlp",
               "MLP 64-128-128-10, batch 32",
               "mlp",
               {"in_features=64", "hidden=[128, 128]", "out_features=10"},
               {{"in_features", 64}, {"hidden", {128, 128}}, {"out_features", 10}},
               "classification",
               "float",
               {64},
               32,
               10,
               20,
               50,
               7});
  c.push_back({"lstm_lm",
               "LSTM LM 2x256, vocab 96, batch 16 x 64",
               "lstm_lm",
               {"vocab_size=96", "embedding_dim=64", "hidden_size=256", "num_layers=2"},
               {{"vocab_size", 96}, {"embedding_dim", 64}, {"hidden_size", 256}, {"num_layers", 2}},
               "lm",
               "ids",
               {64},
               16,
               96,
               3,
               5,
               5});
  c.push_back({"convnet",
               "demo CNN 32-64, hidden 128, batch 128 x 1x28x28",
               "convnet",
               {"in_channels=1", "num_classes=10", "image_size=28", "channels=[32, 64]",
                "hidden=128", "dropout=0.25"},
               {{"in_channels", 1},
                {"num_classes", 10},
                {"image_size", 28},
                {"channels", {32, 64}},
                {"hidden", 128},
                {"dropout", 0.25}},
               "classification",
               "float",
               {1, 28, 28},
               128,
               10,
               3,
               5,
               5});
  c.push_back({"resnet18",
               "ResNet-18 (32x32 stem), batch 16 x 3x32x32",
               "resnet18",
               {"num_classes=10", "small_input=true"},
               {{"num_classes", 10}, {"small_input", true}},
               "classification",
               "float",
               {3, 32, 32},
               cuda ? 256 : 16,
               10,
               2,
               cuda ? 10 : 2,
               5});
  c.back().channels_last = cuda;
  if (cuda) c.back().what = "ResNet-18 (32x32 stem), batch 256 x 3x32x32";
  c.push_back(
      {"gpt_tiny",
       "GPT 4 layers x 128, 4 heads, batch 8 x 128",
       "gpt2",
       {"vocab_size=96", "n_positions=128", "n_embd=128", "n_layer=4", "n_head=4", "dropout=0.0"},
       {{"vocab_size", 96},
        {"n_positions", 128},
        {"n_embd", 128},
        {"n_layer", 4},
        {"n_head", 4},
        {"dropout", 0.0}},
       "lm",
       "ids",
       {128},
       8,
       96,
       3,
       5,
       5});
  c.push_back({"gpt2_124m",
               "GPT-2 124M, batch 16 x 1024",
               "gpt2",
               {"dropout=0.0"},
               {{"vocab_size", 50257},
                {"n_positions", 1024},
                {"n_embd", 768},
                {"n_layer", 12},
                {"n_head", 12},
                {"dropout", 0.0}},
               "lm",
               "ids",
               {1024},
               16,
               50257,
               5,
               10,
               5});
  c.back().gpu_only = true;
  return c;
}

/// Pre-made batches served in a fixed order: the loader costs nothing, on either side.
class FixedBatches : public lathe::data::BatchSource {
 public:
  FixedBatches(std::vector<lathe::data::Batch> batches, int64_t steps)
      : batches_(std::move(batches)), steps_(steps) {}
  int64_t num_batches() const override { return steps_; }
  void set_epoch(int64_t) override {}
  lathe::data::Batch batch(int64_t i) override {
    return batches_[static_cast<size_t>(i) % batches_.size()];
  }
  int64_t size() const override { return steps_ * batches_.front().size(); }

 private:
  std::vector<lathe::data::Batch> batches_;
  int64_t steps_;
};

/// Seconds on the wall clock, or of this process's CPU time (--clock cpu).
double now_s(bool cpu_clock) {
  if (!cpu_clock)
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

/// Times every `chunk` optimizer steps after `warmup` up to step `last`, syncing the device at
/// each mark.
class StepTimer : public lathe::train::Callback {
 public:
  StepTimer(c10::Device device, int64_t warmup, int64_t chunk, int64_t last, bool cpu_clock)
      : device_(device), warmup_(warmup), chunk_(chunk), last_(last), cpu_clock_(cpu_clock) {}
  std::string name() const override { return "step_timer"; }
  void on_train_step_end(lathe::train::Trainer& t, int64_t, int64_t) override {
    const int64_t s = t.global_step();
    if (s < warmup_ || s > last_ || (s - warmup_) % chunk_ != 0) return;
    lathe::synchronize(device_);
    const double now = now_s(cpu_clock_);
    if (s > warmup_) per_step_.push_back((now - mark_) / static_cast<double>(chunk_));
    mark_ = now;
  }
  double median() {
    std::sort(per_step_.begin(), per_step_.end());
    return per_step_[per_step_.size() / 2];
  }

 private:
  c10::Device device_;
  int64_t warmup_, chunk_, last_;
  bool cpu_clock_;
  double mark_ = 0;
  std::vector<double> per_step_;
};

constexpr int64_t kDistinctBatches = 4;

/// Seconds per step of lathe's Trainer on `c` (median over the repeats) and its parameters.
std::pair<double, int64_t> run_lathe(const Case& c, c10::Device device,
                                     const std::string& profile_dir, bool cpu_clock) {
  at::manual_seed(0);
  lathe::config::RunConfig cfg;
  cfg.model = lathe::config::parse_model_section(c.model, c.options);
  auto model = lathe::models::build_model(cfg.model);
  model.ptr()->to(device);
  const int64_t params = lathe::models::parameter_count(*model.ptr());
  cfg.task.kind = c.task;
  cfg.optim.weight_decay = 0.01;
  const int64_t timed = c.warmup + c.steps * c.repeats;
  const int64_t total = timed + (profile_dir.empty() ? 0 : 2);  // profiled: 2 more, untimed
  cfg.trainer.max_epochs = 1;
  cfg.trainer.log_every_n_steps = total;  // one log row: the loss is read once
  cfg.trainer.progress = "none";
  cfg.trainer.precision = "auto";
  auto optimizer = lathe::optim::make_optimizer(cfg.optim, *model.ptr());

  std::vector<lathe::data::Batch> batches;
  for (int64_t b = 0; b < kDistinctBatches; ++b) {
    std::vector<int64_t> shape{c.batch};
    shape.insert(shape.end(), c.input.begin(), c.input.end());
    const at::Tensor x =
        c.input_kind == "ids" ? at::randint(c.classes, shape, at::kLong) : at::randn(shape);
    const at::Tensor y = c.task == "lm" ? at::randint(c.classes, shape, at::kLong)
                                        : at::randint(c.classes, {c.batch}, at::kLong);
    batches.push_back({x, y});
  }
  FixedBatches source(std::move(batches), total);
  lathe::train::Trainer trainer(cfg.trainer, device, model, lathe::train::Task(cfg.task), optimizer,
                                lathe::train::make_schedules(cfg.optim, total, total));
  auto timer = std::make_shared<StepTimer>(device, c.warmup, c.steps, timed, cpu_clock);
  trainer.add_callback(timer);
  if (!profile_dir.empty())  // the two steps after the timed ones
    trainer.add_callback(std::make_shared<lathe::train::ProfilerCallback>(
        timed + 1, timed + 2, profile_dir + "/" + c.name + "/lathe", device, 30));
  trainer.fit(source, nullptr);
  return {timer->median(), params};
}

std::string quoted(const std::string& s) {
  std::string q = "'";
  for (char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

}  // namespace

int main(int argc, char** argv) try {
  std::string python = ".venv/bin/python", script = "bench/train_bench.py", only, profile_dir;
  std::string device_name = torch::cuda::is_available() ? "cuda" : "cpu";
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  bool quick = false, cpu_clock = false;
  int rounds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&] {
      LATHE_CHECK(i + 1 < argc, lathe::Error, "{} needs a value", a);
      return std::string(argv[++i]);
    };
    if (a == "--python")
      python = value();
    else if (a == "--script")
      script = value();
    else if (a == "--device")
      device_name = value();
    else if (a == "--threads")
      threads = std::stoi(value());
    else if (a == "--cases")
      only = "," + value() + ",";
    else if (a == "--rounds")
      rounds = std::max(1, std::stoi(value()));
    else if (a == "--quick")
      quick = true;
    else if (a == "--profile")
      profile_dir = value();
    else if (a == "--clock")
      cpu_clock = value() == "cpu";
    else
      throw lathe::Error(fmt::format("unknown argument {}", a));
  }
  const c10::Device device(device_name);
  const bool cuda = device.is_cuda();
  LATHE_CHECK(!(cuda && cpu_clock), lathe::Error,
              "--clock cpu times the host only: it is for --device cpu");
  at::set_num_threads(threads);
  lathe::configure_cuda(/*deterministic=*/false);
  const std::string precision = lathe::resolve_precision("auto", device);

  std::vector<Case> selected;
  for (auto& c : cases(cuda)) {
    if (c.gpu_only && !cuda) continue;
    if (!only.empty() && only.find("," + c.name + ",") == std::string::npos) continue;
    if (quick) c.repeats = 3, c.steps = std::max<int64_t>(1, c.steps / 2), c.warmup = 2;
    selected.push_back(c);
  }
  if (quick || !profile_dir.empty()) rounds = 1;
  fmt::print("train_bench: device {}, {} threads, precision {}, torch {}, {} rounds, {} time\n",
             device.str(), threads, precision, TORCH_VERSION, rounds,
             cpu_clock ? "process CPU" : "wall");
  fmt::print("{}\n", lathe::bench::machine_line(threads));

  json spec = {{"threads", threads},
               {"device", device.str()},
               {"cases", json::array()},
               {"fused_too", !cuda},
               {"profile_dir", profile_dir},
               {"clock", cpu_clock ? "cpu" : "wall"}};
  for (const auto& c : selected)
    spec["cases"].push_back({{"name", c.name},
                             {"model", c.model},
                             {"options", c.py_options},
                             {"task", c.task},
                             {"input_kind", c.input_kind},
                             {"input", c.input},
                             {"batch", c.batch},
                             {"classes", c.classes},
                             {"warmup", c.warmup},
                             {"steps", c.steps},
                             {"repeats", c.repeats},
                             {"distinct_batches", kDistinctBatches},
                             {"channels_last", c.channels_last},
                             {"precision", precision}});
  // Rounds alternate lathe and PyTorch, so a machine whose load drifts weighs on both alike;
  // each side's time per case is the median over rounds of its per-round medians.
  std::vector<std::vector<double>> ours_r(selected.size()), theirs_r(selected.size()), fused_r(selected.size());
  std::vector<int64_t> params(selected.size());
  std::vector<std::vector<std::string>> kernels_ran(selected.size());  // chosen in round 0
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < selected.size(); ++i) {
      const auto before = lathe::bench::used_kernels();
      const auto [t, n] = run_lathe(selected[i], device, profile_dir, cpu_clock);
      if (round == 0) kernels_ran[i] = lathe::bench::new_kernels(before, lathe::bench::used_kernels());
      ours_r[i].push_back(t);
      params[i] = n;
    }
    const json py = json::parse(
        lathe::bench::run_command(fmt::format("{} {} {}", python, script, quoted(spec.dump()))));
    for (size_t i = 0; i < selected.size(); ++i) {
      const json& r = py.at(selected[i].name);
      theirs_r[i].push_back(r.at("step_s").get<double>());
      if (r.contains("step_s_fused")) fused_r[i].push_back(r.at("step_s_fused").get<double>());
    }
  }
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };

  // PyTorch: torch.optim.AdamW as it comes; on the CPU also with fused=True (lathe's default).
  fmt::print("{:<10} {:<46} {:>9} {:>11} {:>7} {:>11} {:>7}\n", "case", "what", "lathe ms",
             "PyTorch ms", "ratio", cuda ? "" : "fused ms", cuda ? "" : "ratio");
  std::vector<double> ours(selected.size());
  for (size_t i = 0; i < selected.size(); ++i) {
    ours[i] = median(ours_r[i]);
    const double theirs = median(theirs_r[i]);
    std::string fused;
    if (!fused_r[i].empty()) {
      const double f = median(fused_r[i]);
      fused = fmt::format(" {:>11.3f} {:>7.2f}", f * 1e3, ours[i] / f);
    }
    fmt::print("{:<10} {:<46} {:>9.3f} {:>11.3f} {:>7.2f}{}\n", selected[i].name, selected[i].what,
               ours[i] * 1e3, theirs * 1e3, ours[i] / theirs, fused);
    if (cuda && selected[i].model == "gpt2") {
      // Training FLOPs per token: 6·N (N without the position table) + 12·L·C·T (attention).
      const auto& o = selected[i].py_options;
      const double L = o["n_layer"], C = o["n_embd"], T = static_cast<double>(selected[i].input[0]);
      const double n = static_cast<double>(params[i]) - static_cast<double>(o["n_positions"]) * C;
      const double flops = (6 * n + 12 * L * C * T) * T * static_cast<double>(selected[i].batch);
      constexpr double kPeak = 989e12;  // dense bf16, H100 SXM / H200
      fmt::print("{:<10} MFU (bf16 peak 989 TFLOP/s): lathe {:.1f}%, PyTorch {:.1f}%\n", "",
                 100 * flops / ours[i] / kPeak, 100 * flops / theirs / kPeak);
    }
  }
  // Which of lathe's own kernels or ATen's twins ran (lathe/core/kernel_choice.h); a kernel two
  // cases share shows under the first.
  if (!cuda && lathe::kernels::mode() != lathe::kernels::Mode::automatic) {
    fmt::print("kernels: LATHE_KERNELS={} ran that side of every kernel\n",
               lathe::kernels::mode_name(lathe::kernels::mode()));
  } else if (!cuda) {
    fmt::print("kernels lathe's side ran (kernel (shape class): side):\n");
    for (size_t i = 0; i < selected.size(); ++i)
      fmt::print("  {:<10} {}\n", selected[i].name,
                 kernels_ran[i].empty() ? std::string("none of lathe's own")
                                        : fmt::format("{}", fmt::join(kernels_ran[i], "; ")));
  }
  if (cuda)
    fmt::print("peak GPU memory (lathe, last case): {:.2f} GiB\n",
               static_cast<double>(lathe::peak_memory_bytes(device)) / (1 << 30));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train_bench: %s\n", e.what());
  return 1;
}
