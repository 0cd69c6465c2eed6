// Gradient clipping with no host sync: torch's foreach clip_grad_norm_ / clip_grad_value_.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

namespace lathe::optim {

/// Scales the gradients of `params` so that their joint 2-norm is at most `max_norm`, as
/// torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True): one _foreach_norm per device
/// and dtype, the total norm and the factor min(1, max_norm / (total + 1e-6)) kept on the device
/// (no .item(), so the step never waits for the GPU and can be recorded in a CUDA graph).
/// Returns the total norm before clipping, a () float tensor on the first gradient's device
/// (undefined when no parameter has a gradient).
///
///   at::Tensor norm = clip_grad_norm(params, 1.0);  // read it only when logging
at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

/// Clamps every gradient of `params` into [-clip_value, clip_value] in place, as
/// torch.nn.utils.clip_grad_value_ (foreach, no host sync).
void clip_grad_value(const std::vector<at::Tensor>& params, double clip_value);

}  // namespace lathe::optim
