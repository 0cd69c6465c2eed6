// custom_model: a user's own CNN (a LibTorch module) and Dataset (generated images of bars),
// trained by lathe's Trainer with a user loss, checkpointed every epoch, resumed in a fresh
// Trainer, and exported to ONNX. Prints "fact: key=value" lines that scripts/examples.sh checks.
//
//   custom_model OUT_DIR
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>

#include "lathe/ckpt/checkpoint.h"
#include "lathe/ckpt/safetensors.h"
#include "lathe/core/runtime.h"
#include "lathe/data/dataset.h"
#include "lathe/data/loader.h"
#include "lathe/onnx/export.h"
#include "lathe/train/callback.h"
#include "lathe/train/trainer.h"

namespace fs = std::filesystem;

// ---- the user's model: two convolutions and a linear head over 16x16 grey images ------------
struct BarNetImpl : torch::nn::Module {
  explicit BarNetImpl(int64_t classes)
      : conv1(register_module("conv1",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 8, 3).padding(1)))),
        conv2(register_module("conv2",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 16, 3).padding(1)))),
        head(register_module("head", torch::nn::Linear(16 * 4 * 4, classes))) {}

  at::Tensor forward(const at::Tensor& images) {                  // (B, 1, 16, 16)
    at::Tensor x = at::max_pool2d(at::relu(conv1(images)), {2});  // (B, 8, 8, 8)
    x = at::max_pool2d(at::relu(conv2(x)), {2});                  // (B, 16, 4, 4)
    return head(x.flatten(1));                                    // (B, classes)
  }

  torch::nn::Conv2d conv1, conv2;
  torch::nn::Linear head;
};
TORCH_MODULE(BarNet);

// ---- the user's data: a bar (horizontal, vertical or diagonal) in noise; the class is its kind
class Bars : public lathe::data::Dataset {
 public:
  Bars(int64_t size, uint64_t seed) : size_(size), seed_(seed) {}
  int64_t size() const override { return size_; }
  lathe::data::Example get(int64_t i) const override {
    std::mt19937_64 rng(seed_ * 1'000'003 + static_cast<uint64_t>(i));  // a pure function of i
    const int64_t cls = static_cast<int64_t>(rng() % 3);
    const int64_t at = static_cast<int64_t>(2 + rng() % 12);
    at::Tensor img = at::zeros({1, 16, 16});
    auto a = img.accessor<float, 3>();
    std::normal_distribution<float> noise(0.f, 0.3f);
    for (int64_t r = 0; r < 16; ++r)
      for (int64_t c = 0; c < 16; ++c) {
        const bool on = cls == 0 ? r == at : cls == 1 ? c == at : r == c;
        a[0][r][c] = (on ? 1.f : 0.f) + noise(rng);
      }
    return {img, at::scalar_tensor(cls, at::kLong)};
  }

 private:
  int64_t size_;
  uint64_t seed_;
};

// A Trainer around `net`: the same settings for the first run and the resumed one.
struct Rig {
  lathe::config::OptimSection optim;
  lathe::optim::OptimizerBundle optimizer;
  std::unique_ptr<lathe::train::Trainer> trainer;
  std::shared_ptr<lathe::ckpt::Checkpointer> checkpointer;

  Rig(BarNet net, c10::Device device, int64_t max_epochs, int64_t batches, const fs::path& out) {
    optim.name = "adamw";
    optim.lr = 3e-3;
    optimizer = lathe::optim::make_optimizer(optim, *net);
    lathe::config::TrainerSection t;
    t.max_epochs = max_epochs;
    t.progress = "none";
    t.log_every_n_steps = 10;
    // The task gives the metrics (accuracy, ...); the loss is the user's own.
    lathe::config::TaskSection kind;
    kind.kind = "classification";
    lathe::train::Task task(kind);
    task.set_loss([](const at::Tensor& logits, const at::Tensor& y) {
      return at::nll_loss(at::log_softmax(logits, 1), y);  // cross-entropy, written by hand
    });
    trainer = std::make_unique<lathe::train::Trainer>(
        t, device, torch::nn::AnyModule(net), task, optimizer,
        lathe::train::make_schedules(optim, /*total_steps=*/4 * batches, batches));
    lathe::config::CheckpointSection c;
    c.every_n_epochs = 1;
    c.keep_last = 2;
    checkpointer = std::make_shared<lathe::ckpt::Checkpointer>(
        c, out / "checkpoints", /*config_yaml=*/"", task.default_monitor(),
        task.higher_is_better(task.default_monitor()));
    trainer->add_callback(checkpointer);
    trainer->add_callback(std::make_shared<lathe::train::JsonlLogger>(out / "metrics.jsonl", true));
  }
};

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: custom_model OUT_DIR\n");
    return 2;
  }
  const fs::path out = argv[1];
  fs::create_directories(out);
  lathe::seed_everything(0);
  const c10::Device device = lathe::select_device("auto");

  auto options = lathe::data::LoaderOptions().with_batch_size(32).with_seed(0);
  lathe::data::DataLoader train(std::make_shared<Bars>(1200, 1), options.with_shuffle(true));
  lathe::data::DataLoader val(std::make_shared<Bars>(300, 2),
                              lathe::data::LoaderOptions().with_batch_size(100));
  const int64_t batches = train.num_batches();

  // 1. Two epochs, a checkpoint after each.
  BarNet net(3);
  net->to(device);
  Rig first(net, device, /*max_epochs=*/2, batches, out);
  const auto history = first.trainer->fit(train, &val);
  std::printf("fact: first_loss=%.6f\n", history.front().train.at("loss"));
  std::printf("fact: steps_before_resume=%lld\n",
              static_cast<long long>(first.trainer->global_step()));

  // 2. A fresh model and Trainer (other initial weights) continue from the last checkpoint.
  lathe::seed_everything(123);
  BarNet resumed(3);
  resumed->to(device);
  Rig second(resumed, device, /*max_epochs=*/4, batches, out);
  lathe::ckpt::load_checkpoint(*second.trainer, out / "checkpoints" / "last");
  std::printf("fact: resumed_step=%lld\n", static_cast<long long>(second.trainer->global_step()));
  const auto more = second.trainer->fit(train, &val);
  std::printf("fact: resumed_epochs=%zu\n", more.size());
  std::printf("fact: final_step=%lld\n", static_cast<long long>(second.trainer->global_step()));
  std::printf("fact: last_loss=%.6f\n", more.back().train.at("loss"));
  std::printf("fact: val_accuracy=%.6f\n", second.trainer->validate(val).at("accuracy"));

  // 3. ONNX, with a dynamic batch; a probe input and the module's output on it for the check.
  resumed->to(at::kCPU);
  resumed->eval();
  lathe::onnx::ExportOptions eo;
  eo.inputs = {{"images", {{0, "batch"}}}};
  eo.output_names = {"logits"};
  const at::Tensor example = at::randn({2, 1, 16, 16});
  const auto report = lathe::onnx::export_model(
      *resumed,
      [&](const std::vector<at::Tensor>& in) { return std::vector{resumed->forward(in[0])}; },
      {example}, out / "bar_net.onnx", eo);
  std::printf("fact: onnx=%s nodes=%lld\n", report.path.c_str(),
              static_cast<long long>(report.nodes));
  const at::Tensor probe = at::randn({5, 1, 16, 16});
  at::Tensor logits;
  {
    at::NoGradGuard no_grad;
    logits = resumed->forward(probe);
  }
  lathe::ckpt::save_safetensors(out / "probe.safetensors", {{"input", probe}, {"output", logits}});
  std::printf("fact: probe=%s\n", (out / "probe.safetensors").c_str());
  return 0;
}
