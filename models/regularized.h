// Regularized: a model whose training loss carries a penalty on its weights (lasso, ridge).
#pragma once

#include <ATen/core/Tensor.h>

namespace torch::nn {
class Module;
}

namespace lathe::models {

/// Implemented by zoo models that add a weight penalty to their training loss. The trainer adds
/// penalty() to the Task's loss at every training step (never to evaluation metrics).
///
///   at::Tensor loss = task_loss + lathe::models::penalty_of(*model.ptr());
class Regularized {
 public:
  virtual ~Regularized() = default;
  /// The penalty as a differentiable scalar tensor on the model's device.
  virtual at::Tensor penalty() const = 0;
};

/// The module's penalty when it is Regularized, else an undefined tensor (nothing to add).
at::Tensor penalty_of(const torch::nn::Module& module);

}  // namespace lathe::models
