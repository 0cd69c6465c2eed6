// Task: losses per problem kind, and their meters.
#include "lathe/train/task.h"

#include <ATen/ATen.h>

#include "lathe/core/error.h"

namespace lathe::train {

Task::Task(config::TaskSection cfg) : cfg_(std::move(cfg)) {
  if (cfg_.loss.empty()) cfg_.loss = cfg_.kind == "regression" ? "mse" : "cross_entropy";
}

at::Tensor Task::loss(const at::Tensor& output, const at::Tensor& target) const {
  if (cfg_.kind == "classification") {
    LATHE_CHECK(output.dim() == 2 && target.dim() == 1, TrainError,
                "classification loss wants logits (B, K) and class ids (B), got {} and {}",
                output.sizes(), target.sizes());
    const at::Tensor& weight = class_weights_on(output.device());
    LATHE_CHECK(!weight.defined() || weight.size(0) == output.size(1), ConfigError,
                "task.class_weights has {} values but the model predicts {} classes",
                cfg_.class_weights.size(), output.size(1));
    return at::cross_entropy_loss(output.to(at::kFloat), target, weight, at::Reduction::Mean,
                                  -100, cfg_.label_smoothing);
  }
  if (cfg_.kind == "lm") {
    const int64_t v = output.size(-1);
    return at::cross_entropy_loss(output.reshape({-1, v}).to(at::kFloat), target.reshape({-1}), {},
                                  at::Reduction::Mean, cfg_.ignore_index, cfg_.label_smoothing);
  }
  // regression: outputs and targets with the same number of values per record
  LATHE_CHECK(output.numel() == target.numel(), TrainError,
              "regression loss wants outputs and targets with the same number of values, got {} "
              "and {}",
              output.sizes(), target.sizes());
  const at::Tensor y = target.reshape(output.sizes()).to(at::kFloat);
  const at::Tensor p = output.to(at::kFloat);
  if (cfg_.loss == "l1") return at::l1_loss(p, y);
  if (cfg_.loss == "huber") return at::huber_loss(p, y, at::Reduction::Mean, cfg_.huber_delta);
  return at::mse_loss(p, y);
}

const at::Tensor& Task::class_weights_on(c10::Device device) const {
  if (!cfg_.class_weights.empty() &&
      (!class_weights_.defined() || class_weights_.device() != device))
    class_weights_ = at::tensor(cfg_.class_weights, at::kFloat).to(device);  // (K)
  return class_weights_;
}

std::unique_ptr<Meter> Task::meter(bool detailed) const {
  std::unique_ptr<Meter> base;
  if (cfg_.kind == "classification")
    base = std::make_unique<ClassificationMeter>(detailed, cfg_.top_k);
  else if (cfg_.kind == "lm")
    base = std::make_unique<LanguageModelMeter>(cfg_.ignore_index);
  else
    base = std::make_unique<RegressionMeter>();
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

std::string Task::default_monitor() const {
  return cfg_.kind == "classification" ? "val/accuracy" : "val/loss";
}

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
