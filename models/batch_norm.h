// BatchNorm1d / BatchNorm2d with torch's names, options and state; training on CPU runs lathe's kernels.
#pragma once

#include <torch/nn/modules/batchnorm.h>

namespace lathe::models {

/// torch::nn::BatchNorm2d (same options, parameters, buffers and state-dict names; `as<>` finds it
/// as one) whose training-mode forward and backward on a float32 CPU tensor — NCHW or
/// channels-last contiguous — run lathe's kernels: statistics, normalisation and the backward's
/// two reductions each one vectorised pass, where ATen's CPU kernels take ~2 ns per element
/// (ResNet-18's twenty batch norms: 19 + 17 ms of a step against lathe's, bench/train_bench).
/// Running statistics and num_batches_tracked update as torch's do. Evaluation, CUDA, other
/// dtypes, momentum=None, a trace for ONNX export and a double backward run torch's forward.
class BatchNorm2dImpl : public torch::nn::BatchNorm2dImpl {
 public:
  using torch::nn::BatchNorm2dImpl::BatchNorm2dImpl;
  at::Tensor forward(const at::Tensor& input);  ///< (N, C, H, W) → (N, C, H, W), same layout
};
TORCH_MODULE(BatchNorm2d);

/// torch::nn::BatchNorm1d with BatchNorm2d's kernels for (N, C) inputs; (N, C, L) runs torch's.
class BatchNorm1dImpl : public torch::nn::BatchNorm1dImpl {
 public:
  using torch::nn::BatchNorm1dImpl::BatchNorm1dImpl;
  at::Tensor forward(const at::Tensor& input);  ///< (N, C) → (N, C)
};
TORCH_MODULE(BatchNorm1d);

}  // namespace lathe::models
