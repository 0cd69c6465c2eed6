// Tabular models: MLP construction, the linear model and its L1 / L2 penalty.
#include "models/tabular/tabular.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/dropout.h>

#include "lathe/core/error.h"

namespace lathe::models {

at::Tensor penalty_of(const torch::nn::Module& module) {
  const auto* r = dynamic_cast<const Regularized*>(&module);
  return r != nullptr ? r->penalty() : at::Tensor();
}

MLPImpl::MLPImpl(const MLPOptions& options_) : options(options_) { reset(); }

void MLPImpl::reset() {
  namespace nn = torch::nn;
  const auto& o = options;
  LATHE_CHECK(o.in_features() > 0 && o.out_features() > 0, ModelError,
              "mlp: in_features ({}) and out_features ({}) must be positive", o.in_features(),
              o.out_features());
  LATHE_CHECK(o.dropout() >= 0 && o.dropout() < 1, ModelError, "mlp: dropout {} must be in [0, 1)",
              o.dropout());
  LATHE_CHECK(o.activation() == "relu" || o.activation() == "gelu" || o.activation() == "tanh",
              ModelError, "mlp: activation '{}' is not one of relu, gelu, tanh", o.activation());
  layers = nn::Sequential();
  int64_t in = o.in_features();
  for (int64_t width : o.hidden()) {
    LATHE_CHECK(width > 0, ModelError, "mlp: hidden widths must be positive, got {}", width);
    layers->push_back(nn::Linear(in, width));
    if (o.batch_norm()) layers->push_back(nn::BatchNorm1d(width));
    if (o.activation() == "relu")
      layers->push_back(nn::ReLU(/*inplace=*/true));  // Linear's and BN's backward read inputs
    else if (o.activation() == "gelu")
      layers->push_back(nn::GELU());
    else
      layers->push_back(nn::Tanh());
    if (o.dropout() > 0) layers->push_back(nn::Dropout(o.dropout()));
    in = width;
  }
  layers->push_back(nn::Linear(in, o.out_features()));
  register_module("layers", layers);
}

at::Tensor MLPImpl::forward(const at::Tensor& x) {
  LATHE_CHECK(x.dim() == 2 && x.size(1) == options.in_features(), ModelError,
              "mlp: expected input (B, {}), got {}", options.in_features(), x.sizes());
  return layers->forward(x);  // (B, out_features)
}

LinearModelImpl::LinearModelImpl(const LinearModelOptions& options_) : options(options_) {
  reset();
}

void LinearModelImpl::reset() {
  const auto& o = options;
  LATHE_CHECK(o.in_features() > 0 && o.out_features() > 0, ModelError,
              "linear: in_features ({}) and out_features ({}) must be positive", o.in_features(),
              o.out_features());
  LATHE_CHECK(o.l1() >= 0 && o.l2() >= 0, ModelError,
              "linear: penalties l1 ({}) and l2 ({}) must not be negative", o.l1(), o.l2());
  linear = register_module(
      "linear", torch::nn::Linear(
                    torch::nn::LinearOptions(o.in_features(), o.out_features()).bias(o.bias())));
}

at::Tensor LinearModelImpl::forward(const at::Tensor& x) {
  LATHE_CHECK(x.dim() == 2 && x.size(1) == options.in_features(), ModelError,
              "linear: expected input (B, {}), got {}", options.in_features(), x.sizes());
  return linear(x);  // (B, out_features)
}

at::Tensor LinearModelImpl::penalty() const {
  const at::Tensor& w = linear->weight;  // (out, in)
  at::Tensor p = at::zeros({}, w.options());
  if (options.l1() > 0) p = p + options.l1() * w.abs().sum();
  if (options.l2() > 0) p = p + options.l2() * w.square().sum();
  return p;  // ()
}

}  // namespace lathe::models
