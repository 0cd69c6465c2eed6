// Support-vector machines through LIBSVM (libsvm, the library scikit-learn's SVC / SVR wrap),
// kept as LIBSVM's model text (svm_save_model / svm_load_model).
#pragma once

#include <cstdint>
#include <string>

#include <torch/arg.h>
#include <vector>

#include "models/estimator.h"

struct svm_model;
struct svm_node;

namespace lathe::models {

/// Options of SvmEstimator, named and defaulted as scikit-learn's SVC / SVR.
///
///   SvmEstimator svc(SvmOptions().kernel("rbf").C(10).gamma("scale"));
struct SvmOptions {
  TORCH_ARG(std::string, kernel) = "rbf";  ///< linear | poly | rbf | sigmoid
  TORCH_ARG(double, C) = 1.0;
  /// scale: 1 / (F · Var(X)) over the training table; auto: 1 / F; or a number
  TORCH_ARG(std::string, gamma) = "scale";
  TORCH_ARG(int64_t, degree) = 3;          ///< poly
  TORCH_ARG(double, coef0) = 0.0;          ///< poly, sigmoid
  TORCH_ARG(double, epsilon) = 0.1;        ///< SVR: the tube's half-width
  TORCH_ARG(double, tol) = 1e-3;           ///< the solver's stopping tolerance
  TORCH_ARG(bool, shrinking) = true;
  TORCH_ARG(double, cache_size) = 200;     ///< kernel cache, MB
};

/// C-SVC (classification; class weights scale C per class as sklearn's class_weight) or
/// epsilon-SVR (regression). predict gives, for K > 2 classes, scikit-learn's one-vs-rest
/// decision values (decision_function_shape='ovr': votes plus bounded confidences) as logits
/// (N, K); for 2 classes [0, d] with d sklearn's decision_function (positive: class 1); for
/// regression the values (N, 1). The class is their argmax (sklearn's predict with break_ties).
class SvmEstimator : public Estimator {
 public:
  explicit SvmEstimator(SvmOptions options);
  ~SvmEstimator() override;
  SvmEstimator(const SvmEstimator&) = delete;
  SvmEstimator& operator=(const SvmEstimator&) = delete;

  void fit(const at::Tensor& x, const at::Tensor& y, const FitTask& task,
           const RoundHook& after_round = {}) override;
  at::Tensor predict(const at::Tensor& x) const override;
  std::string file_name() const override { return "model.libsvm"; }
  void save(const std::filesystem::path& file) const override;
  void load(const std::filesystem::path& file) override;

  /// The pairwise (one-vs-one) decision values (N, K(K-1)/2) in scikit-learn's order (pairs
  /// (i, j), i < j, of class ids; positive: class i): SVC's decision_function_shape='ovo'.
  /// Regression: the predicted values (N, 1).
  at::Tensor decision_values(const at::Tensor& x) const;
  /// The gamma the kernel used ('scale' and 'auto' resolved on the training table).
  double fitted_gamma() const;
  /// "324": LIBSVM_VERSION of the libsvm lathe links.
  static int library_version();

 private:
  void free_model();

  SvmOptions options_;
  svm_model* model_ = nullptr;
  std::vector<svm_node> train_nodes_;  ///< a fitted model's support vectors point in here
  int64_t max_index_ = 0;              ///< the highest feature index the support vectors use
};

}  // namespace lathe::models
