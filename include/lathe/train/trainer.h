// Trainer: the fit / evaluate loop for classification, with progress, logs and NaN detection.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <torch/nn/modules/container/any.h>

#include "lathe/data/tensor_data.h"
#include "lathe/sched/schedule.h"

namespace torch::optim {
class Optimizer;
}

namespace lathe::train {

using Metrics = std::map<std::string, double>;

/// How long to train and how to report.
struct TrainerOptions {
  int64_t max_epochs = 1;
  int64_t log_every_n_steps = 50;
  std::string progress = "auto";      ///< auto | bar | plain | none
  c10::Device device = c10::kCPU;
  std::filesystem::path metrics_file;  ///< metrics.jsonl (one JSON object per line); empty = none
};

/// One finished epoch: train and validation metrics, the last learning rate, wall time.
struct EpochRecord {
  int64_t epoch = 0;  ///< 1-based
  int64_t step = 0;   ///< global optimizer steps so far
  Metrics train;
  Metrics val;
  double lr = 0;
  double seconds = 0;
};

/// Appends one JSON object per line to metrics.jsonl, flushed line by line.
class MetricsLog {
 public:
  MetricsLog() = default;
  explicit MetricsLog(const std::filesystem::path& file);
  /// {"kind": kind, "epoch": ..., "step": ..., <prefix>/<name>: value ...}
  void write(const std::string& kind, int64_t epoch, int64_t step, const Metrics& values);
  bool enabled() const { return out_.is_open(); }

 private:
  std::filesystem::path file_;
  std::ofstream out_;
};

/// Loss and accuracy of a classification model over every batch of `loader`, in eval mode
/// without gradients (the module's train/eval mode is restored afterwards).
Metrics evaluate(torch::nn::AnyModule& model, data::TensorLoader& loader, c10::Device device);

/// Trains a classification model: forward → cross-entropy → backward → optimizer step, with
/// the learning rate from `schedule` at every global step. A non-finite loss stops the run with
/// a TrainError before anything is saved.
///
///   Trainer trainer(opts, model, *optimizer, schedule);
///   auto history = trainer.fit(train_loader, &val_loader);
///   Metrics test = trainer.evaluate(test_loader);
class Trainer {
 public:
  Trainer(TrainerOptions options, torch::nn::AnyModule model, torch::optim::Optimizer& optimizer,
          sched::LrSchedule schedule);

  /// Runs max_epochs epochs; validates after each when `val` is given.
  std::vector<EpochRecord> fit(data::TensorLoader& train, data::TensorLoader* val);

  /// Loss and accuracy over every batch of `loader` (see the free function evaluate).
  Metrics evaluate(data::TensorLoader& loader) { return train::evaluate(model_, loader, options_.device); }

  int64_t global_step() const { return step_; }
  MetricsLog& log() { return log_; }

 private:
  Metrics train_epoch(data::TensorLoader& loader, int64_t epoch);
  bool show_bar() const;

  TrainerOptions options_;
  torch::nn::AnyModule model_;
  torch::optim::Optimizer& optimizer_;
  sched::LrSchedule schedule_;
  MetricsLog log_;
  int64_t step_ = 0;
  double lr_ = 0;
};

}  // namespace lathe::train
