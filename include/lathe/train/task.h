// Task: what is learnt — turns (model output, targets) into a loss and makes the matching meters.
#pragma once

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "lathe/config/config.h"
#include "lathe/train/metrics.h"

namespace lathe::train {

/// The objective of a run. The model owns forward; the task owns the loss and the metrics:
///  - classification: cross-entropy (label smoothing, class weights) on logits (B, K)
///  - regression: mse, l1 or huber on outputs shaped like the targets
///  - lm: next-token cross-entropy on logits (B, T, V) against ids (B, T); perplexity
///
///   Task task(cfg.task);
///   at::Tensor loss = task.loss(model_output, batch.targets);
///   auto meter = task.meter(/*detailed=*/true);
class Task {
 public:
  /// A classification task with cross-entropy.
  Task();
  /// The task `cfg` names (config/names.h: task kinds and their losses); kind auto is a
  /// ConfigError (a run resolves it from its data first).
  explicit Task(config::TaskSection cfg);

  at::Tensor loss(const at::Tensor& output, const at::Tensor& target) const;
  /// A fresh meter for this task (detailed: every metric; else the cheap ones for training).
  std::unique_ptr<Meter> meter(bool detailed) const;
  /// The validation metric to watch by default and whether higher is better.
  std::string default_monitor() const;
  bool higher_is_better(const std::string& metric) const;
  const config::TaskSection& config() const { return cfg_; }

 private:
  at::Tensor classification_loss(const at::Tensor& output, const at::Tensor& target) const;
  config::TaskSection cfg_;
  const config::TaskSpec* spec_;
  config::Loss loss_;
};

}  // namespace lathe::train
