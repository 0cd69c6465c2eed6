// Estimator: a model that is not a torch module (gradient-boosted trees, forests, SVMs) — fit on
// a table's training split by its library, predict, and kept in that library's own file format.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace lathe::models {

/// What an estimator learns, from the run's data and task: sections.
struct FitTask {
  std::string kind;                   ///< classification | regression
  int64_t num_classes = 0;            ///< classification: the data's classes
  std::vector<double> class_weights;  ///< task.class_weights, one per class (empty: all 1)
  std::string loss;                   ///< regression: mse | l1 (task.loss)
  uint64_t seed = 0;                  ///< run.seed
  int threads = 0;                    ///< run.threads (0: the library's default)
};

/// Called after each boosting round with the number of rounds in the model; returning false
/// stops the fit there (early stopping, a stop signal).
using RoundHook = std::function<bool(int64_t rounds)>;

/// The seam for models a library fits in one call. The model table (models/registry.h) makes
/// one from a config's model options; run trains it on the loaded splits instead of the Trainer.
/// Outputs are shaped as a zoo model's, so metrics, reports and predict treat both alike:
/// classification gives logits (N, K) whose softmax is the model's class scores; regression
/// gives values (N, 1).
///
///   auto est = lathe::models::make_estimator(cfg.model);   // null for torch models
///   est->fit(x_train, y_train, task);                      // x (N, F) float, y (N)
///   at::Tensor logits = est->predict(x_test);              // (N, K)
///   est->save(run_dir / est->file_name());
class Estimator {
 public:
  virtual ~Estimator() = default;
  /// Trains on `x` (N, F) float32 and `y` (N) (class ids for classification, values for
  /// regression). When the model already holds rounds (load() of a checkpoint), boosting
  /// continues from them up to the planned rounds. `after_round` (boosted models) sees each round.
  virtual void fit(const at::Tensor& x, const at::Tensor& y, const FitTask& task,
                   const RoundHook& after_round = {}) = 0;
  /// (N, F) float32 → logits (N, K) or values (N, 1), float32 on the CPU. Before fit or load
  /// this is a ModelError.
  virtual at::Tensor predict(const at::Tensor& x) const = 0;
  /// The model's file in a run folder: model.json (XGBoost's JSON) or model.libsvm (LIBSVM's text).
  virtual std::string file_name() const = 0;
  /// Writes the model in its library's format, atomically.
  virtual void save(const std::filesystem::path& file) const = 0;
  /// Reads a model save() wrote; a missing, truncated or foreign file is a CheckpointError naming it.
  virtual void load(const std::filesystem::path& file) = 0;
  /// Boosting rounds planned (0 for models fitted in one step: they write no checkpoints).
  virtual int64_t planned_rounds() const { return 0; }
  /// Boosting rounds in the model now.
  virtual int64_t rounds() const { return 0; }
  /// Keeps the first `rounds` rounds (early stopping keeps the best).
  virtual void keep_rounds(int64_t rounds) { (void)rounds; }
  /// Per-feature importance (XGBoost's total gain), `num_features` values; empty when the model
  /// has none (SVMs).
  virtual std::vector<double> feature_importance(int64_t num_features) const {
    (void)num_features;
    return {};
  }
};

/// An Estimator seen as a module for inference: forward(x) = predict(x) on x's device, so a
/// finished run's estimator goes wherever a zoo model's forward does (evaluate, predict).
class EstimatorModuleImpl : public torch::nn::Module {
 public:
  explicit EstimatorModuleImpl(std::shared_ptr<Estimator> estimator)
      : estimator(std::move(estimator)) {}
  /// (B, F) → (B, K) logits or (B, 1) values
  at::Tensor forward(const at::Tensor& x);

  std::shared_ptr<Estimator> estimator;
};
TORCH_MODULE(EstimatorModule);

/// The estimator inside `module` when it is an EstimatorModule; null for torch models.
std::shared_ptr<Estimator> estimator_of(const torch::nn::Module& module);

}  // namespace lathe::models
