// Optimizer factory: SGD / Adam / AdamW from config, with weight decay only where it belongs.
#pragma once

#include <memory>
#include <vector>

#include "lathe/config/config.h"

namespace torch {
namespace nn {
class Module;
}
namespace optim {
class Optimizer;
}
}  // namespace torch

namespace lathe::optim {

/// Builds the optimizer of `cfg` over the trainable parameters of `module`, in two groups:
/// weights of dimension ≥ 2 get weight_decay; biases and normalisation weights (1-d) get none.
/// Frozen parameters (requires_grad false) are left out.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const config::OptimSection& cfg,
                                                        torch::nn::Module& module);

/// Sets the learning rate of every parameter group.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace lathe::optim
