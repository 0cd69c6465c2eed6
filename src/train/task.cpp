// Task: losses per problem kind, and their meters.
#include "lathe/train/task.h"

#include <ATen/ATen.h>

#include "lathe/core/error.h"

namespace lathe::train {

namespace {

config::TaskSection classification() {
  config::TaskSection t;
  t.kind = "classification";
  return t;
}

}  // namespace

Task::Task() : Task(classification()) {}

Task::Task(config::TaskSection cfg)
    : cfg_(std::move(cfg)), spec_(&config::task_spec(cfg_.kind)) {
  const config::LossSpec& l = config::loss_spec(*spec_, cfg_.loss);
  cfg_.loss = std::string(l.name);
  loss_ = l.loss;
}

at::Tensor Task::loss(const at::Tensor& output, const at::Tensor& target) const {
  switch (loss_) {
    case config::Loss::cross_entropy:
      if (spec_->kind == config::TaskKind::lm) {  // logits (B, T, V) against ids (B, T)
        const int64_t v = output.size(-1);
        return at::cross_entropy_loss(output.reshape({-1, v}).to(at::kFloat),
                                      target.reshape({-1}), {}, at::Reduction::Mean,
                                      cfg_.ignore_index, cfg_.label_smoothing);
      }
      return classification_loss(output, target);
    case config::Loss::mse:
    case config::Loss::l1:
    case config::Loss::huber: {
      // regression: outputs and targets with the same number of values per record
      LATHE_CHECK(output.numel() == target.numel(), TrainError,
                  "regression loss wants outputs and targets with the same number of values, got "
                  "{} and {}",
                  output.sizes(), target.sizes());
      const at::Tensor y = target.reshape(output.sizes()).to(at::kFloat);
      const at::Tensor p = output.to(at::kFloat);
      if (loss_ == config::Loss::l1) return at::l1_loss(p, y);
      if (loss_ == config::Loss::huber)
        return at::huber_loss(p, y, at::Reduction::Mean, cfg_.huber_delta);
      return at::mse_loss(p, y);
    }
  }
  throw TrainError(fmt::format("task.loss '{}' has no implementation", cfg_.loss));
}

at::Tensor Task::classification_loss(const at::Tensor& output, const at::Tensor& target) const {
  LATHE_CHECK(output.dim() == 2 && target.dim() == 1, TrainError,
              "classification loss wants logits (B, K) and class ids (B), got {} and {}",
              output.sizes(), target.sizes());
  at::Tensor weight;
  if (!cfg_.class_weights.empty()) {
    LATHE_CHECK(static_cast<int64_t>(cfg_.class_weights.size()) == output.size(1), ConfigError,
                "task.class_weights has {} values but the model predicts {} classes",
                cfg_.class_weights.size(), output.size(1));
    weight = at::tensor(cfg_.class_weights, output.options().dtype(at::kFloat));
  }
  try {
    return at::cross_entropy_loss(output.to(at::kFloat), target, weight, at::Reduction::Mean, -100,
                                  cfg_.label_smoothing);
  } catch (const c10::Error& e) {  // no check per step: only a failing step pays for the message
    throw TrainError(fmt::format(
        "classification loss: a class id is outside the model's {} outputs (logits {}); the "
        "model's num_classes / out_features / num_labels must cover every class of the data "
        "(torch: {})",
        output.size(1), output.sizes(), e.what_without_backtrace()));
  }
}

std::unique_ptr<Meter> Task::meter(bool detailed) const {
  switch (spec_->kind) {
    case config::TaskKind::classification:
      return std::make_unique<ClassificationMeter>(detailed, cfg_.top_k);
    case config::TaskKind::lm: return std::make_unique<LanguageModelMeter>(cfg_.ignore_index);
    case config::TaskKind::regression: return std::make_unique<RegressionMeter>();
  }
  throw TrainError(fmt::format("task.kind '{}' has no meter", cfg_.kind));
}

std::string Task::default_monitor() const { return std::string(spec_->monitor); }

bool Task::higher_is_better(const std::string& metric) const {
  for (const char* up : {"accuracy", "precision", "recall", "f1", "roc_auc", "r2"})
    if (metric.find(up) != std::string::npos) return true;
  return false;
}

}  // namespace lathe::train
