// Tabular models for the CSV pipeline: an MLP, and linear / logistic regression with L1 / L2.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/regularized.h"

namespace lathe::models {

/// Options of MLP.
///
///   MLP mlp(MLPOptions().in_features(13).hidden({64, 32}).out_features(3).dropout(0.1));
struct MLPOptions {
  TORCH_ARG(int64_t, in_features) = 1;
  TORCH_ARG(std::vector<int64_t>, hidden) = std::vector<int64_t>{64, 64};
  TORCH_ARG(int64_t, out_features) = 1;         ///< classes (logits) or regression targets
  TORCH_ARG(std::string, activation) = "relu";  ///< relu | gelu | tanh
  TORCH_ARG(double, dropout) = 0.0;             ///< after each hidden activation (when > 0)
  TORCH_ARG(bool, batch_norm) = false;          ///< BatchNorm1d after each hidden Linear
};

/// A multilayer perceptron as one nn.Sequential `layers`: per hidden width Linear →
/// [BatchNorm1d] → activation → [Dropout], then Linear(out_features). Names follow PyTorch's
/// for the same nn.Sequential: layers.0.weight, layers.1.running_mean, ...
class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const MLPOptions& options = {});
  /// (B, in_features) → (B, out_features)
  at::Tensor forward(const at::Tensor& x);
  void reset();

  MLPOptions options;
  torch::nn::Sequential layers{nullptr};
};
TORCH_MODULE(MLP);

/// Options of LinearModel. The model is the same for regression and classification; the Task's
/// loss makes it linear regression (MSE), logistic regression (binary / softmax cross-entropy).
///
///   LinearModel lasso(LinearModelOptions().in_features(20).l1(1e-3));
struct LinearModelOptions {
  TORCH_ARG(int64_t, in_features) = 1;
  TORCH_ARG(int64_t, out_features) = 1;
  TORCH_ARG(double, l1) = 0.0;   ///< lasso: l1 · Σ|w|
  TORCH_ARG(double, l2) = 0.0;   ///< ridge: l2 · Σw²
  TORCH_ARG(bool, bias) = true;  ///< the bias is never penalised
};

/// y = x Wᵀ + b through one `linear` layer (names linear.weight, linear.bias), with
/// penalty() = l1 · Σ|W| + l2 · ΣW² for the trainer to add to the loss.
class LinearModelImpl : public torch::nn::Module, public Regularized {
 public:
  explicit LinearModelImpl(const LinearModelOptions& options = {});
  /// (B, in_features) → (B, out_features): predictions or logits
  at::Tensor forward(const at::Tensor& x);
  at::Tensor penalty() const override;
  void reset();

  LinearModelOptions options;
  torch::nn::Linear linear{nullptr};
};
TORCH_MODULE(LinearModel);

}  // namespace lathe::models
