// Gradient-boosted trees and random forests through XGBoost's C API (libxgboost), kept as
// XGBoost's JSON model (Python's xgboost.Booster(model_file=...) loads it).
#pragma once

#include <cstdint>
#include <string>

#include <torch/arg.h>

#include "models/estimator.h"

namespace lathe::models {

/// Options of XGBoostEstimator, named as Python's xgboost.XGBClassifier / XGBRFClassifier.
///
///   XGBoostEstimator gbt(XGBoostOptions().n_estimators(200).learning_rate(0.1).max_depth(4));
struct XGBoostOptions {
  /// gbtree: n_estimators boosting rounds of one tree each (XGBClassifier);
  /// forest: one round of n_estimators parallel trees, learning rate 1 (XGBRFClassifier)
  TORCH_ARG(std::string, mode) = "gbtree";
  TORCH_ARG(int64_t, n_estimators) = 100;    ///< rounds (gbtree) or trees (forest)
  TORCH_ARG(double, learning_rate) = 0.3;    ///< eta (forest: 1)
  TORCH_ARG(int64_t, max_depth) = 6;
  TORCH_ARG(double, min_child_weight) = 1.0;
  TORCH_ARG(double, subsample) = 1.0;        ///< rows drawn per tree, without replacement
  TORCH_ARG(double, colsample_bytree) = 1.0;
  TORCH_ARG(double, colsample_bynode) = 1.0;
  TORCH_ARG(double, reg_lambda) = 1.0;       ///< L2 on leaf weights
  TORCH_ARG(double, reg_alpha) = 0.0;        ///< L1 on leaf weights
  TORCH_ARG(double, gamma) = 0.0;            ///< minimum loss reduction to split
  TORCH_ARG(int64_t, max_bin) = 256;         ///< histogram bins (tree_method hist)
  TORCH_ARG(std::string, tree_method) = "hist";  ///< hist | exact | approx
  TORCH_ARG(std::string, device) = "cpu";    ///< cpu | cuda (needs an XGBoost built with CUDA)
};

/// XGBoost's gbtree booster: objective from the task (multi:softprob with num_class, binary:
/// logistic, reg:squarederror or reg:absoluteerror), class weights as instance weights, seeded by
/// run.seed with seed_per_iteration (so a resumed fit draws what an uninterrupted one does).
/// predict gives XGBoost's margins: logits (N, K) — binary (N, 2) as [0, margin] — or values (N, 1).
class XGBoostEstimator : public Estimator {
 public:
  explicit XGBoostEstimator(XGBoostOptions options);
  ~XGBoostEstimator() override;
  XGBoostEstimator(const XGBoostEstimator&) = delete;
  XGBoostEstimator& operator=(const XGBoostEstimator&) = delete;

  void fit(const at::Tensor& x, const at::Tensor& y, const FitTask& task,
           const RoundHook& after_round = {}) override;
  at::Tensor predict(const at::Tensor& x) const override;
  std::string file_name() const override { return "model.json"; }
  void save(const std::filesystem::path& file) const override;
  void load(const std::filesystem::path& file) override;
  int64_t planned_rounds() const override {
    return options_.mode() == "forest" ? 0 : options_.n_estimators();
  }
  int64_t rounds() const override;
  void keep_rounds(int64_t rounds) override;
  std::vector<double> feature_importance(int64_t num_features) const override;

  /// The model as XGBoost's JSON text.
  std::string to_json() const;
  /// "1.7.4": the libxgboost lathe links.
  static std::string library_version();

 private:
  /// The objective's output layout, read from the model: "multi" (K margins), "binary", "reg".
  void read_layout(const std::string& objective, int64_t num_class);
  void set_params(void* booster, const FitTask& task) const;

  XGBoostOptions options_;
  void* booster_ = nullptr;  ///< BoosterHandle; null until fit or load
  std::string layout_;       ///< multi | binary | reg
  int64_t num_class_ = 0;
};

}  // namespace lathe::models
