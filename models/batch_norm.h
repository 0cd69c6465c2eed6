// BatchNorm2d with torch's names, options and state; training on CPU (NCHW) runs lathe's kernels.
#pragma once

#include <torch/nn/modules/batchnorm.h>

namespace lathe::models {

/// torch::nn::BatchNorm2d (same options, parameters, buffers and state-dict names; `as<>` finds it
/// as one) whose training-mode forward and backward on an NCHW-contiguous float32 CPU tensor run
/// lathe's kernels — the mean, the variance and the normalisation each one vectorised pass, the
/// backward one reduction pass and one pass for dx — or ATen's, whichever the first call of its
/// shape class times faster on this machine (lathe/core/kernel_choice.h; LATHE_KERNELS forces
/// one). Planes under 64 values always run ATen's (below a 4×4 plane lathe's per-plane calls cost
/// more than they save). Running statistics and num_batches_tracked update as torch's do.
/// Evaluation, channels-last batches (ATen's NHWC kernel is already vectorised over channels),
/// CUDA, other dtypes, momentum=None, a trace for ONNX export and a double backward run torch's.
class BatchNorm2dImpl : public torch::nn::BatchNorm2dImpl {
 public:
  using torch::nn::BatchNorm2dImpl::BatchNorm2dImpl;
  at::Tensor forward(const at::Tensor& input);  ///< (N, C, H, W) → (N, C, H, W)
};
TORCH_MODULE(BatchNorm2d);

}  // namespace lathe::models
