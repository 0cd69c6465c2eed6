// custom_metric: a user's metric (recall of one class, over the whole validation set and every
// rank) and a user's callback (the worst class's recall after each validation), with lathe's
// Trainer logging both to metrics.jsonl and TensorBoard, and early stopping watching the user
// metric in its own direction. Prints "fact: key=value" lines that scripts/examples.sh checks,
// and writes the validation logits for a check against scikit-learn.
//
//   custom_metric OUT_DIR
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>

#include "lathe/ckpt/safetensors.h"
#include "lathe/core/runtime.h"
#include "lathe/data/tensor_data.h"
#include "lathe/train/callback.h"
#include "lathe/train/metrics.h"
#include "lathe/train/trainer.h"

namespace fs = std::filesystem;
using lathe::train::Metrics;

constexpr int64_t kClasses = 3;

// ---- the user's metric: recall of class `cls` = hits / records of that class ------------------
class ClassRecall : public lathe::train::Metric {
 public:
  explicit ClassRecall(int64_t cls) : cls_(cls) {}
  std::string name() const override { return "recall_" + std::to_string(cls_); }
  bool higher_is_better() const override { return true; }
  void update(const at::Tensor& logits, const at::Tensor& y) override {  // (B, K), (B)
    const at::Tensor is_cls = y == cls_;                                 // (B)
    const at::Tensor hit = is_cls & (logits.argmax(1) == cls_);          // (B)
    const at::Tensor batch = at::stack({hit.sum(), is_cls.sum()});       // (2) on the device
    counts_ = counts_.defined() ? counts_ + batch : batch;
  }
  double compute() const override {
    if (!counts_.defined()) return 0.0;
    const at::Tensor c = counts_.cpu();
    const int64_t records = c[1].item<int64_t>();
    if (records == 0) return 0.0;  // scikit-learn's zero_division=0
    return static_cast<double>(c[0].item<int64_t>()) / static_cast<double>(records);
  }
  void reduce(const lathe::train::MeterReduce& r) override {  // sums over data-parallel ranks
    at::Tensor c = counts_.defined() ? counts_.cpu() : at::zeros({2}, at::kLong);
    r.sum(c);
    counts_ = c;
  }
  void reset() override { counts_ = at::Tensor(); }

 private:
  int64_t cls_;
  at::Tensor counts_;  ///< (2) int64: hits, records of the class
};

// ---- the user's callback: the worst class after each validation, logged like any value --------
class WorstClassRecall : public lathe::train::Callback {
 public:
  std::string name() const override { return "worst_class_recall"; }
  void on_validation_end(lathe::train::Trainer& trainer, const Metrics& val) override {
    double worst = std::numeric_limits<double>::infinity();
    int64_t worst_class = -1;
    for (int64_t k = 0; k < kClasses; ++k) {
      const double recall = val.at("val/recall_" + std::to_string(k));
      if (recall < worst) worst = recall, worst_class = k;
    }
    trainer.log("val", {{"val/worst_recall", worst},
                        {"val/worst_class", static_cast<double>(worst_class)}});
  }
};

// ---- the model and data: a linear classifier over three overlapping 2-d blobs, the last rare --
struct LinearNetImpl : torch::nn::Module {
  LinearNetImpl() : fc(register_module("fc", torch::nn::Linear(2, kClasses))) {}
  at::Tensor forward(const at::Tensor& x) { return fc(x); }  // (B, 2) -> (B, K)
  torch::nn::Linear fc;
};
TORCH_MODULE(LinearNet);

lathe::data::TensorDataset blobs(int64_t n, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor u = at::rand({n}, gen);
  const at::Tensor y = (u > 0.45).to(at::kLong) + (u > 0.9).to(at::kLong);  // 45% / 45% / 10%
  const at::Tensor centers = at::tensor({0.f, 0.f, 1.5f, 0.f, 0.75f, 1.2f}).view({3, 2});
  return {centers.index_select(0, y) + 0.6 * at::randn({n, 2}, gen), y};  // (N, 2), (N)
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: custom_metric OUT_DIR\n");
    return 2;
  }
  const fs::path out = argv[1];
  fs::create_directories(out);
  lathe::seed_everything(0);
  const c10::Device device = lathe::select_device("auto");
  lathe::data::TensorLoader train(blobs(2000, 1), 64, /*shuffle=*/true, /*seed=*/0);
  lathe::data::TensorLoader val(blobs(1000, 2), 250, /*shuffle=*/false, /*seed=*/0);

  LinearNet net;
  net->to(device);
  lathe::config::OptimSection optim;
  optim.lr = 0.05;
  auto optimizer = lathe::optim::make_optimizer(optim, *net);
  lathe::config::TrainerSection t;
  t.max_epochs = 6;
  t.progress = "none";
  t.log_every_n_steps = 10;
  lathe::train::Task task;  // classification: cross-entropy, accuracy, ...
  for (int64_t k = 0; k < kClasses; ++k)
    task.add_metric([k] { return std::make_unique<ClassRecall>(k); });
  lathe::train::Trainer trainer(
      t, device, torch::nn::AnyModule(net), task, optimizer,
      lathe::train::make_schedules(optim, 6 * train.num_batches(), train.num_batches()));
  trainer.add_callback(std::make_shared<WorstClassRecall>());
  trainer.add_callback(std::make_shared<lathe::train::JsonlLogger>(out / "metrics.jsonl"));
  auto tensorboard = std::make_shared<lathe::train::TensorBoardLogger>(out / "tensorboard");
  trainer.add_callback(tensorboard);
  // Early stopping on the user's metric: "auto" takes its direction from higher_is_better().
  auto stopping = std::make_shared<lathe::train::EarlyStopping>("val/recall_2", "auto",
                                                                /*patience=*/100, 0.0);
  trainer.add_callback(stopping);
  const auto history = trainer.fit(train, &val);

  std::printf("fact: first_loss=%.6f\n", history.front().train.at("loss"));
  std::printf("fact: last_loss=%.6f\n", history.back().train.at("loss"));
  std::printf("fact: early_stopping_best=%.6f\n", stopping->best());
  const Metrics final_val = trainer.validate(val);
  for (int64_t k = 0; k < kClasses; ++k)
    std::printf("fact: recall_%lld=%.6f\n", static_cast<long long>(k),
                final_val.at("recall_" + std::to_string(k)));
  std::printf("fact: tensorboard=%s\n", tensorboard->file().c_str());

  // The validation set and the model's logits on it, for the scikit-learn check.
  const at::Tensor logits = trainer.predict(val);  // (N, K) on the CPU
  lathe::ckpt::save_safetensors(out / "val_predictions.safetensors",
                                {{"logits", logits}, {"targets", val.dataset().targets}});
  std::printf("fact: predictions=%s\n", (out / "val_predictions.safetensors").c_str());
  return 0;
}
