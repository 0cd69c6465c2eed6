// Meters: device-side sums during the epoch, one sync and exact values in compute().
#include "lathe/train/metrics.h"

#include <cmath>
#include <initializer_list>
#include <limits>
#include <vector>

#include <ATen/ATen.h>

#include "lathe/core/error.h"

namespace lathe::train {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

at::Tensor accumulate(const at::Tensor& sum, const at::Tensor& value) {
  return sum.defined() ? sum + value : value;
}

double as_double(const at::Tensor& t) { return t.defined() ? t.item<double>() : 0.0; }

/// Sums a meter's record count and scalar sums over ranks, in place (an undefined sum counts as
/// 0): one float64 all-reduce, exact for counts below 2^53.
void reduce_sums(const MeterReduce& r, int64_t& count, std::initializer_list<at::Tensor*> sums) {
  std::vector<double> values{static_cast<double>(count)};
  for (const at::Tensor* sum : sums) values.push_back(as_double(*sum));
  at::Tensor packed = at::tensor(values, at::kDouble);  // (1 + S)
  r.sum(packed);
  const auto* p = packed.data_ptr<double>();
  count = static_cast<int64_t>(p[0]);
  for (at::Tensor* sum : sums) *sum = at::scalar_tensor(*++p, at::kDouble);
}

}  // namespace

// ---- classification ----------------------------------------------------------------------------

ClassificationMeter::ClassificationMeter(bool detailed, int64_t top_k)
    : detailed_(detailed), top_k_(top_k) {}

void ClassificationMeter::update(const at::Tensor& logits_in, const at::Tensor& target_in,
                                 const at::Tensor& loss) {
  const at::Tensor logits = logits_in.detach();  // (B, K)
  const at::Tensor target = target_in.detach();  // (B)
  LATHE_CHECK(logits.dim() == 2 && target.dim() == 1 && logits.size(0) == target.size(0),
              TrainError,
              "classification wants logits (B, K) and class ids (B), got {} and {}; for other "
              "shapes choose task.kind regression or lm",
              logits.sizes(), target.sizes());
  const int64_t b = target.size(0);
  const at::Tensor pred = logits.argmax(1);  // (B)
  loss_sum_ = accumulate(loss_sum_, loss.detach().to(at::kDouble) * static_cast<double>(b));
  correct_ = accumulate(correct_, pred.eq(target).sum());
  const int64_t k = std::min(top_k_, logits.size(1));
  const at::Tensor topk = std::get<1>(logits.topk(k, 1));          // (B, k)
  topk_correct_ = accumulate(topk_correct_, topk.eq(target.unsqueeze(1)).any(1).sum());
  if (detailed_) {  // kept on the device: one copy to the host when the epoch is computed
    preds_.push_back(pred);
    targets_.push_back(target);
    scores_.push_back(logits.to(at::kFloat).softmax(1));  // (B, K)
  }
  count_ += b;
}

void ClassificationMeter::to_host() const {
  const auto gather = [](std::vector<at::Tensor>& parts) {
    if (parts.empty() || (parts.size() == 1 && parts.front().is_cpu())) return;
    parts = {at::cat(parts).cpu()};
  };
  gather(preds_);
  gather(targets_);
  gather(scores_);
}

void ClassificationMeter::reduce(const MeterReduce& r) {
  reduce_sums(r, count_, {&loss_sum_, &correct_, &topk_correct_});
  if (!detailed_) return;
  to_host();
  // Per-record predictions, targets and scores of every rank, in rank order.
  const auto gather = [&](const std::vector<at::Tensor>& parts, at::ScalarType dtype) {
    const at::Tensor mine = parts.empty() ? at::empty({0, 1}, dtype) : at::cat(parts);
    return r.cat(mine.dim() == 1 ? mine.unsqueeze(1) : mine);  // (N, m)
  };
  const at::Tensor preds = gather(preds_, at::kLong), targets = gather(targets_, at::kLong),
                   scores = gather(scores_, at::kFloat);
  preds_.clear();
  targets_.clear();
  scores_.clear();
  if (preds.size(0) == 0) return;
  preds_ = {preds.view(-1)};      // (N)
  targets_ = {targets.view(-1)};  // (N)
  scores_ = {scores};             // (N, K)
}

void ClassificationMeter::reset() {
  *this = ClassificationMeter(detailed_, top_k_);
}

at::Tensor ClassificationMeter::confusion() const {
  LATHE_CHECK(detailed_, TrainError, "the confusion matrix needs a detailed ClassificationMeter");
  if (preds_.empty()) return at::zeros({0, 0}, at::kLong);
  to_host();
  const at::Tensor pred = at::cat(preds_), target = at::cat(targets_);
  const int64_t k = scores_.front().size(1);
  return at::bincount(target * k + pred, {}, k * k).view({k, k});  // (K, K)
}

double roc_auc_binary(const at::Tensor& scores, const at::Tensor& labels) {
  const at::Tensor s = scores.to(at::kDouble).flatten();
  const at::Tensor y = labels.to(at::kBool).flatten();
  const int64_t n = s.size(0);
  const int64_t pos = y.sum().item<int64_t>();
  const int64_t neg = n - pos;
  if (pos == 0 || neg == 0) return kNaN;
  // Average ranks (1-based) with ties sharing their mean rank: Mann–Whitney U.
  const auto [sorted, order] = s.sort();
  const double* v = sorted.data_ptr<double>();
  std::vector<double> rank(static_cast<size_t>(n));
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j + 1 < n && v[j + 1] == v[i]) ++j;
    const double r = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;
    for (int64_t t = i; t <= j; ++t) rank[static_cast<size_t>(t)] = r;
    i = j + 1;
  }
  const at::Tensor ranks = at::empty({n}, at::kDouble);
  ranks.index_put_({order}, at::tensor(rank, at::kDouble));
  const double pos_rank_sum = ranks.masked_select(y).sum().item<double>();
  const auto p = static_cast<double>(pos), q = static_cast<double>(neg);
  return (pos_rank_sum - p * (p + 1) / 2.0) / (p * q);
}

Metrics ClassificationMeter::compute() const {
  if (count_ == 0) return {{"loss", kNaN}, {"accuracy", kNaN}};
  const auto n = static_cast<double>(count_);
  Metrics m{{"loss", as_double(loss_sum_) / n},
            {"accuracy", as_double(correct_) / n},
            {fmt::format("top{}_accuracy", top_k_), as_double(topk_correct_) / n}};
  if (!detailed_) return m;

  const at::Tensor cm = confusion().to(at::kDouble);  // (K, K)
  const at::Tensor tp = cm.diagonal();
  const at::Tensor support = cm.sum(1);    // true count per class
  const at::Tensor predicted = cm.sum(0);  // predicted count per class
  const at::Tensor precision = at::where(predicted > 0, tp / predicted.clamp_min(1), 0.0);
  const at::Tensor recall = at::where(support > 0, tp / support.clamp_min(1), 0.0);
  const at::Tensor denom = precision + recall;
  const at::Tensor f1 = at::where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), 0.0);
  const at::Tensor present = (support + predicted) > 0;  // sklearn: labels in y_true ∪ y_pred
  const auto macro = [&](const at::Tensor& v) { return v.masked_select(present).mean().item<double>(); };
  const auto weighted = [&](const at::Tensor& v) {
    return (v * support).sum().item<double>() / support.sum().item<double>();
  };
  m["precision_macro"] = macro(precision);
  m["recall_macro"] = macro(recall);
  m["f1_macro"] = macro(f1);
  m["precision_weighted"] = weighted(precision);
  m["recall_weighted"] = weighted(recall);
  m["f1_weighted"] = weighted(f1);
  // Single-label multi-class: micro precision = micro recall = micro F1 = accuracy.
  m["precision_micro"] = m["recall_micro"] = m["f1_micro"] = m["accuracy"];

  to_host();
  const at::Tensor scores = at::cat(scores_), target = at::cat(targets_);
  const int64_t k = scores.size(1);
  if (k == 2) {
    m["roc_auc"] = roc_auc_binary(scores.select(1, 1), target.eq(1));
  } else {
    double sum = 0;
    int64_t classes = 0;
    for (int64_t c = 0; c < k; ++c) {
      const double auc = roc_auc_binary(scores.select(1, c), target.eq(c));
      if (std::isnan(auc)) continue;  // a class absent from the targets has no AUC
      sum += auc;
      ++classes;
    }
    m["roc_auc"] = classes > 0 ? sum / static_cast<double>(classes) : kNaN;
  }
  return m;
}

// ---- regression --------------------------------------------------------------------------------

void RegressionMeter::update(const at::Tensor& output_in, const at::Tensor& target_in,
                             const at::Tensor& loss) {
  const int64_t b = target_in.size(0);
  LATHE_CHECK(output_in.numel() == target_in.numel(), TrainError,
              "regression wants outputs and targets with the same number of values, got {} and {}",
              output_in.sizes(), target_in.sizes());
  const at::Tensor y = target_in.detach().reshape({b, -1}).to(at::kDouble);  // (B, D)
  const at::Tensor p = output_in.detach().reshape({b, -1}).to(at::kDouble);  // (B, D)
  const at::Tensor e = p - y;
  loss_sum_ = accumulate(loss_sum_, loss.detach().to(at::kDouble) * static_cast<double>(b));
  abs_err_ = accumulate(abs_err_, e.abs().sum(0));
  sq_err_ = accumulate(sq_err_, e.square().sum(0));
  y_sum_ = accumulate(y_sum_, y.sum(0));
  y_sq_sum_ = accumulate(y_sq_sum_, y.square().sum(0));
  count_ += b;
}

void RegressionMeter::reduce(const MeterReduce& r) {
  // Per-output sums: one row [loss, abs (D), sq (D), y (D), y² (D)] from each rank with records.
  const at::Tensor mine = count_ == 0
                              ? at::empty({0, 1}, at::kDouble)
                              : at::cat({loss_sum_.reshape({1}), abs_err_, sq_err_, y_sum_,
                                         y_sq_sum_}).cpu().unsqueeze(0);  // (1, 1 + 4D)
  const at::Tensor all = r.cat(mine);  // (ranks with records, 1 + 4D)
  reduce_sums(r, count_, {});
  if (all.size(0) == 0) return;
  const at::Tensor total = all.sum(0);
  const int64_t d = (total.size(0) - 1) / 4;
  loss_sum_ = total[0];
  abs_err_ = total.narrow(0, 1, d);
  sq_err_ = total.narrow(0, 1 + d, d);
  y_sum_ = total.narrow(0, 1 + 2 * d, d);
  y_sq_sum_ = total.narrow(0, 1 + 3 * d, d);
}

void RegressionMeter::reset() { *this = RegressionMeter(); }

Metrics RegressionMeter::compute() const {
  if (count_ == 0) return {{"loss", kNaN}, {"mse", kNaN}};
  const auto n = static_cast<double>(count_);
  const at::Tensor mse = sq_err_ / n;                             // (D)
  const at::Tensor ss_tot = y_sq_sum_ - y_sum_.square() / n;     // (D)
  // sklearn: R² of a constant target is 1 if predicted exactly, else 0.
  const at::Tensor r2 = at::where(ss_tot > 0, 1.0 - sq_err_ / ss_tot.clamp_min(1e-300),
                                  at::where(sq_err_ == 0, 1.0, 0.0));
  return {{"loss", as_double(loss_sum_) / n},
          {"mae", (abs_err_ / n).mean().item<double>()},
          {"mse", mse.mean().item<double>()},
          {"rmse", mse.sqrt().mean().item<double>()},
          {"r2", r2.mean().item<double>()}};
}

// ---- language modelling ------------------------------------------------------------------------

void LanguageModelMeter::update(const at::Tensor& logits_in, const at::Tensor& target_in,
                                const at::Tensor& loss) {
  const at::Tensor logits = logits_in.detach();
  const at::Tensor target = target_in.detach();
  LATHE_CHECK(logits.dim() == target.dim() + 1 && logits.sizes().slice(0, target.dim()) == target.sizes(),
              TrainError, "language modelling wants logits (B, T, V) and token ids (B, T), got {} and {}",
              logits.sizes(), target.sizes());
  const at::Tensor mask = target.ne(ignore_index_);
  const at::Tensor tokens = mask.sum();
  loss_sum_ = accumulate(loss_sum_, loss.detach().to(at::kDouble) * tokens);
  correct_ = accumulate(correct_, logits.argmax(-1).eq(target).logical_and(mask).sum());
  tokens_ = accumulate(tokens_, tokens);
  count_ += target.numel();
}

void LanguageModelMeter::reduce(const MeterReduce& r) {
  reduce_sums(r, count_, {&loss_sum_, &correct_, &tokens_});
}

void LanguageModelMeter::reset() { *this = LanguageModelMeter(ignore_index_); }

Metrics LanguageModelMeter::compute() const {
  const double tokens = as_double(tokens_);
  if (tokens == 0) return {{"loss", kNaN}, {"perplexity", kNaN}};
  const double loss = as_double(loss_sum_) / tokens;
  return {{"loss", loss}, {"perplexity", std::exp(loss)}, {"accuracy", as_double(correct_) / tokens}};
}

// ---- the table of built-in metrics, and user metrics -------------------------------------------

const std::vector<MetricInfo>& builtin_metrics(const std::string& kind) {
  static const std::vector<MetricInfo> classification = {
      {"loss", false},           {"accuracy", true},         {"top{k}_accuracy", true},
      {"precision_macro", true}, {"recall_macro", true},     {"f1_macro", true},
      {"precision_micro", true}, {"recall_micro", true},     {"f1_micro", true},
      {"precision_weighted", true}, {"recall_weighted", true}, {"f1_weighted", true},
      {"roc_auc", true}};
  static const std::vector<MetricInfo> regression = {
      {"loss", false}, {"mae", false}, {"mse", false}, {"rmse", false}, {"r2", true}};
  static const std::vector<MetricInfo> lm = {
      {"loss", false}, {"perplexity", false}, {"accuracy", true}};
  static const std::vector<MetricInfo> none;
  if (kind == "classification") return classification;
  if (kind == "regression") return regression;
  if (kind == "lm") return lm;
  return none;
}

MeterWithMetrics::MeterWithMetrics(std::unique_ptr<Meter> base,
                                   std::vector<std::unique_ptr<Metric>> extra)
    : base_(std::move(base)), extra_(std::move(extra)) {}

void MeterWithMetrics::update(const at::Tensor& output, const at::Tensor& target,
                              const at::Tensor& loss) {
  base_->update(output, target, loss);
  const at::Tensor out = output.detach(), y = target.detach();
  for (auto& m : extra_) m->update(out, y);
}

Metrics MeterWithMetrics::compute() const {
  Metrics m = base_->compute();
  for (const auto& metric : extra_) m[metric->name()] = metric->compute();
  return m;
}

void MeterWithMetrics::reset() {
  base_->reset();
  for (auto& m : extra_) m->reset();
}

void MeterWithMetrics::reduce(const MeterReduce& r) {
  base_->reduce(r);
  for (auto& m : extra_) m->reduce(r);
}

}  // namespace lathe::train
