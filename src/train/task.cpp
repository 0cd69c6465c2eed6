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

Task& Task::set_loss(LossFn loss) {
  LATHE_CHECK(static_cast<bool>(loss), ConfigError,
              "Task::set_loss: the loss function is empty; pass a callable (output, target) -> "
              "scalar tensor, or keep task.loss '{}'",
              cfg_.loss);
  user_loss_ = std::move(loss);
  return *this;
}

at::Tensor Task::loss(const at::Tensor& output, const at::Tensor& target) const {
  if (user_loss_) {
    at::Tensor l = user_loss_(output, target);
    LATHE_CHECK(l.defined() && l.dim() == 0, TrainError,
                "the loss given to Task::set_loss returned {} for outputs {} and targets {}; it "
                "must return a scalar (e.g. the mean over the batch)",
                l.defined() ? fmt::format("a tensor of shape {}", l.sizes())
                            : std::string("an undefined tensor"),
                output.sizes(), target.sizes());
    return l;
  }
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
  const at::Tensor& weight = class_weights_on(output.device());
  LATHE_CHECK(!weight.defined() || weight.size(0) == output.size(1), ConfigError,
              "task.class_weights has {} values but the model predicts {} classes",
              cfg_.class_weights.size(), output.size(1));
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

const at::Tensor& Task::class_weights_on(c10::Device device) const {
  if (!cfg_.class_weights.empty() &&
      (!class_weights_.defined() || class_weights_.device() != device))
    class_weights_ = at::tensor(cfg_.class_weights, at::kFloat).to(device);  // (K)
  return class_weights_;
}

std::unique_ptr<Meter> Task::meter(bool detailed) const {
  std::unique_ptr<Meter> base;
  switch (spec_->kind) {
    case config::TaskKind::classification:
      base = std::make_unique<ClassificationMeter>(detailed, cfg_.top_k);
      break;
    case config::TaskKind::lm: base = std::make_unique<LanguageModelMeter>(cfg_.ignore_index); break;
    case config::TaskKind::regression: base = std::make_unique<RegressionMeter>(); break;
  }
  if (!detailed || metrics_.empty()) return base;  // user metrics: validation and test
  std::vector<std::unique_ptr<Metric>> extra;
  for (const auto& make : metrics_) extra.push_back(make());
  return std::make_unique<MeterWithMetrics>(std::move(base), std::move(extra));
}

Task& Task::add_metric(MetricFactory factory) {
  LATHE_CHECK(factory != nullptr, ConfigError, "Task::add_metric: no metric factory given");
  const std::string name = factory()->name();
  for (const auto& info : builtin_metrics(cfg_.kind))
    LATHE_CHECK(info.name != name, ConfigError,
                "Task::add_metric: '{}' is already a metric of task.kind {}; name yours apart",
                name, cfg_.kind);
  for (const auto& make : metrics_)
    LATHE_CHECK(make()->name() != name, ConfigError,
                "Task::add_metric: a metric named '{}' was added already", name);
  metrics_.push_back(std::move(factory));
  return *this;
}

std::string Task::default_monitor() const { return std::string(spec_->monitor); }

bool Task::higher_is_better(const std::string& metric) const {
  const std::string name = metric.substr(metric.rfind('/') == std::string::npos
                                             ? 0
                                             : metric.rfind('/') + 1);
  std::string known;
  for (const auto& info : builtin_metrics(cfg_.kind)) {
    const bool topk = info.name == "top{k}_accuracy" &&
                      name == fmt::format("top{}_accuracy", cfg_.top_k);
    if (info.name == name || topk) return info.higher_is_better;
    known += (known.empty() ? "" : ", ") + info.name;
  }
  for (const auto& make : metrics_) {
    const auto m = make();
    if (m->name() == name) return m->higher_is_better();
    known += ", " + m->name();
  }
  throw ConfigError(fmt::format(
      "'{}' is not a metric of task.kind {}; monitor one of: {} (with a val/ prefix)", metric,
      cfg_.kind, known));
}

}  // namespace lathe::train
