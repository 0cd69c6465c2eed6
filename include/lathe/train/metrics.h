// Epoch metrics, exact over every record (never averages of per-batch values), with the
// definitions of scikit-learn: accuracy, top-k, precision/recall/F1, ROC-AUC, confusion matrix;
// MAE, MSE, RMSE, R²; token accuracy and perplexity.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/dist/reduce.h"

namespace lathe::train {

using Metrics = std::map<std::string, double>;

/// The collectives a meter needs to combine its state over ranks (owned by dist).
using MeterReduce = dist::MeterReduce;

/// Accumulates one epoch of one task's outputs and reports its metrics.
class Meter {
 public:
  virtual ~Meter() = default;
  /// Adds a batch: the model's output and the targets (detached inside), and the batch's mean
  /// loss. Values stay on the device until compute().
  virtual void update(const at::Tensor& output, const at::Tensor& target, const at::Tensor& loss) = 0;
  virtual Metrics compute() const = 0;
  virtual void reset() = 0;
  /// Records added since the last reset (tokens for language models).
  virtual int64_t count() const = 0;
  /// Combines every rank's state (call once on every rank, then compute()): sums are summed,
  /// the detailed metrics' per-record scores gathered, so the metrics are exact over all ranks.
  virtual void reduce(const MeterReduce& r) = 0;
};

/// Classification: logits (B, K), class ids (B). Reports loss, accuracy and top{k}_accuracy;
/// with `detailed`, also precision / recall / f1 (macro, micro, weighted; zero_division = 0),
/// roc_auc (binary: the positive class; multi-class: one-vs-rest, macro) — keeping the softmax
/// scores of the epoch on the CPU — and the confusion matrix (confusion()).
class ClassificationMeter : public Meter {
 public:
  explicit ClassificationMeter(bool detailed = false, int64_t top_k = 5);
  void update(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& loss) override;
  Metrics compute() const override;
  void reset() override;
  int64_t count() const override { return count_; }
  void reduce(const MeterReduce& r) override;
  /// (K, K) int64: rows are true classes, columns predictions (sklearn's confusion_matrix).
  at::Tensor confusion() const;

 private:
  /// Concatenates the per-batch records into one tensor each, on the host (one copy each).
  void to_host() const;

  bool detailed_;
  int64_t top_k_;
  int64_t count_ = 0;
  at::Tensor loss_sum_, correct_, topk_correct_;  ///< () device scalars
  /// Per batch on the device while updating; one host tensor each once computed or reduced.
  mutable std::vector<at::Tensor> preds_, targets_, scores_;
};

/// Regression: outputs and targets of the same number of values per record (B) or (B, D).
/// Reports loss, mae, mse, rmse and r2 (uniform average over outputs, as sklearn).
class RegressionMeter : public Meter {
 public:
  void update(const at::Tensor& output, const at::Tensor& target, const at::Tensor& loss) override;
  Metrics compute() const override;
  void reset() override;
  int64_t count() const override { return count_; }
  void reduce(const MeterReduce& r) override;

 private:
  int64_t count_ = 0;
  at::Tensor loss_sum_, abs_err_, sq_err_, y_sum_, y_sq_sum_;  ///< (D) float64 sums on the device
};

/// Language modelling: logits (B, T, V), next-token ids (B, T). Reports loss (mean per counted
/// token), perplexity = exp(loss) and token accuracy; tokens equal to ignore_index do not count.
class LanguageModelMeter : public Meter {
 public:
  explicit LanguageModelMeter(int64_t ignore_index = -100) : ignore_index_(ignore_index) {}
  void update(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& loss) override;
  Metrics compute() const override;
  void reset() override;
  int64_t count() const override { return count_; }
  void reduce(const MeterReduce& r) override;

 private:
  int64_t ignore_index_;
  int64_t count_ = 0;
  at::Tensor loss_sum_, correct_, tokens_;
};

/// One metric over an epoch's records: the seam for a user's own. It knows its name (logged
/// as val/<name>, test/<name>, usable as a monitor), whether higher is better (best checkpoint,
/// early stopping and plateau take their direction from it), how to update, compute, and
/// combine its state over the ranks of a data-parallel run.
///
///   struct MaxError : lathe::train::Metric {
///     at::Tensor worst = at::zeros({});
///     std::string name() const override { return "max_error"; }
///     bool higher_is_better() const override { return false; }
///     void update(const at::Tensor& out, const at::Tensor& y) override {
///       worst = at::maximum(worst, (out.flatten() - y.flatten()).abs().max().cpu());
///     }
///     double compute() const override { return worst.item<double>(); }
///     void reduce(const MeterReduce& r) override { ... }   // e.g. r.cat + max
///     void reset() override { worst = at::zeros({}); }
///   };
///   task.add_metric([] { return std::make_unique<MaxError>(); });
class Metric {
 public:
  virtual ~Metric() = default;
  virtual std::string name() const = 0;
  virtual bool higher_is_better() const = 0;
  /// Adds a batch: the model's output and the targets (detached by the caller).
  virtual void update(const at::Tensor& output, const at::Tensor& target) = 0;
  /// The value over every record added (and, after reduce(), over every rank's).
  virtual double compute() const = 0;
  /// Combines every rank's state; called once on every rank before compute().
  virtual void reduce(const MeterReduce& r) = 0;
  /// Forgets every record (a new epoch).
  virtual void reset() = 0;
};

/// Makes a fresh Metric: one per epoch meter.
using MetricFactory = std::function<std::unique_ptr<Metric>()>;

/// The metrics lathe's own meters report for a task kind (classification, regression, lm),
/// with their directions: the one table that monitors, best checkpoints, early stopping and
/// plateau read. Names are without the val/ or test/ prefix; classification's top-k accuracy
/// appears as "top{k}_accuracy".
struct MetricInfo {
  std::string name;
  bool higher_is_better;
};
const std::vector<MetricInfo>& builtin_metrics(const std::string& task_kind);

/// A meter that also feeds user metrics (Task::add_metric): the base meter's metrics plus one
/// entry per Metric.
class MeterWithMetrics : public Meter {
 public:
  MeterWithMetrics(std::unique_ptr<Meter> base, std::vector<std::unique_ptr<Metric>> extra);
  void update(const at::Tensor& output, const at::Tensor& target, const at::Tensor& loss) override;
  Metrics compute() const override;
  void reset() override;
  int64_t count() const override { return base_->count(); }
  void reduce(const MeterReduce& r) override;

 private:
  std::unique_ptr<Meter> base_;
  std::vector<std::unique_ptr<Metric>> extra_;
};

/// ROC-AUC of scores for a binary problem (labels 0/1), ties given average ranks
/// (sklearn's roc_auc_score). NaN when only one class is present.
double roc_auc_binary(const at::Tensor& scores, const at::Tensor& labels);

}  // namespace lathe::train
