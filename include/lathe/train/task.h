// Task: what is learnt — turns (model output, targets) into a loss and makes the matching meters.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "lathe/config/config.h"
#include "lathe/train/metrics.h"

namespace lathe::train {

/// A user's loss: (model output, targets) → the scalar to minimise (a mean over the batch).
using LossFn = std::function<at::Tensor(const at::Tensor& output, const at::Tensor& target)>;

/// The objective of a run. The model owns forward; the task owns the loss and the metrics:
///  - classification: cross-entropy (label smoothing, class weights) on logits (B, K)
///  - regression: mse, l1 or huber on outputs shaped like the targets
///  - lm: next-token cross-entropy on logits (B, T, V) against ids (B, T); perplexity
///
///   Task task(cfg.task);
///   at::Tensor loss = task.loss(model_output, batch.targets);
///   auto meter = task.meter(/*detailed=*/true);
///
/// Outside a config, name the kind and, if lathe's losses do not fit, give your own:
///
///   lathe::config::TaskSection t;
///   t.kind = "classification";
///   lathe::train::Task task(t);
///   task.set_loss([](const at::Tensor& logits, const at::Tensor& y) {
///     return at::nll_loss(at::log_softmax(logits, 1), y);
///   });
class Task {
 public:
  /// A classification task with cross-entropy.
  Task();
  /// The task `cfg` names (config/names.h: task kinds and their losses); kind auto is a
  /// ConfigError (a run resolves it from its data first).
  explicit Task(config::TaskSection cfg);

  /// The loss of a batch: the user's (set_loss) when given, else the kind's (task.loss).
  at::Tensor loss(const at::Tensor& output, const at::Tensor& target) const;
  /// Trains on `loss` instead of the kind's loss; the meters, metrics and monitors stay the
  /// kind's (their "loss" is then this one's batch mean). An empty function is a ConfigError.
  ///
  ///   task.set_loss([](const at::Tensor& out, const at::Tensor& y) {
  ///     return at::smooth_l1_loss(out.squeeze(1), y);  // (B, 1) against (B)
  ///   });
  Task& set_loss(LossFn loss);
  /// Whether set_loss gave this task a loss of the user's.
  bool has_user_loss() const { return static_cast<bool>(user_loss_); }
  /// A fresh meter for this task (detailed: every metric; else the cheap ones for training).
  std::unique_ptr<Meter> meter(bool detailed) const;
  /// The validation metric to watch by default and whether higher is better.
  std::string default_monitor() const;
  /// Whether higher values of `metric` (with or without a val/, test/ or train_epoch/ prefix)
  /// are better: from the table of this kind's metrics (builtin_metrics) or the user metric of
  /// that name. A name that is neither is a ConfigError listing the known ones.
  bool higher_is_better(const std::string& metric) const;
  /// Adds a metric of the user's to the meters this task makes for validation and testing:
  /// its values appear as val/<name> and test/<name>, and it can be monitored.
  ///
  ///   task.add_metric([] { return std::make_unique<MyRecall>(/*cls=*/1); });
  Task& add_metric(MetricFactory factory);
  const config::TaskSection& config() const { return cfg_; }
  /// task.class_weights as a (K) float tensor on `device`, made once per device and reused:
  /// no host-to-device copy (and no host sync) per step. Undefined without class weights.
  const at::Tensor& class_weights_on(c10::Device device) const;

 private:
  at::Tensor classification_loss(const at::Tensor& output, const at::Tensor& target) const;
  config::TaskSection cfg_;
  const config::TaskSpec* spec_;  ///< this kind's entry of config::tasks()
  config::Loss loss_;
  LossFn user_loss_;  ///< set_loss; empty = the kind's loss_
  std::vector<MetricFactory> metrics_;  ///< user metrics, in the order added
  mutable at::Tensor class_weights_;  ///< (K) on the device of the last loss() call
};

}  // namespace lathe::train
