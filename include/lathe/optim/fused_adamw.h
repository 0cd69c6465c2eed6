// FusedAdamW: torch::optim::AdamW whose step runs ATen's fused multi-tensor kernel
// (at::_fused_adamw_: one launch per device and dtype on CUDA; also implemented on CPU).
#pragma once

#include <torch/optim/adamw.h>

namespace lathe::optim {

/// Same options, state and serialization as torch::optim::AdamW (checkpoints move freely between
/// the two), with step() done by at::_fused_adamw_ over all parameters of a group at once instead
/// of one small kernel sequence per parameter.
///
///   FusedAdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  at::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace lathe::optim
