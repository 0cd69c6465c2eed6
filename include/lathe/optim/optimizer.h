// Optimizer factory: SGD / Adam / AdamW / RMSprop from config, parameter groups with weight decay
// only where it belongs, and the setters schedules use.
#pragma once

#include <cmath>
#include <functional>
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

/// An optimizer and what lathe knows about its parameter groups. Its special members are
/// defined out of line, so that this header stays light (torch::optim::Optimizer is only
/// declared here) and still compiles wherever a bundle is made, moved or destroyed.
struct OptimizerBundle {
  OptimizerBundle();
  ~OptimizerBundle();
  OptimizerBundle(OptimizerBundle&&) noexcept;
  OptimizerBundle& operator=(OptimizerBundle&&) noexcept;

  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::string kind;                ///< sgd | adam | adamw | rmsprop
  std::vector<double> lr_scale;    ///< per group: its lr = schedule value · lr_scale
  std::vector<bool> decays;        ///< per group: whether weight decay applies
  torch::optim::Optimizer& operator*() { return *optimizer; }
  torch::optim::Optimizer* operator->() { return optimizer.get(); }
};

/// How parameters are split into groups beyond decay / no decay (fine-tuning).
struct GroupRules {
  std::vector<std::string> head;   ///< name patterns of head parameters (full lr)
  double backbone_lr_scale = 1.0;  ///< lr multiplier for the others, when `head` is given
  bool include_frozen = false;     ///< keep frozen parameters in their groups (to unfreeze later)
  /// For optim.layer_decay: the layer id of a parameter name, 0 (embeddings) … num_layers + 1
  /// (head), and num_layers, the model's blocks (models/layers.h gives both for the
  /// zoo's transformers). A parameter of layer id i gets lr · layer_decay^(num_layers + 1 − i).
  std::function<int64_t(const std::string&)> layer_of;
  int64_t num_layers = 0;
};

/// Builds the optimizer of `cfg` over the parameters of `module`. Groups: weights of dimension
/// ≥ 2 get weight_decay, biases and normalisation weights (1-d) none; with `rules.head`, head and
/// backbone parameters are grouped apart and the backbone's lr is scaled; with cfg.layer_decay
/// below 1, each layer id (rules.layer_of) is a group of its own, its lr scaled by
/// layer_decay^(num_layers + 1 − id) (times the backbone scale). Frozen parameters
/// (requires_grad false) are left out unless rules.include_frozen.
///
///   auto opt = make_optimizer(cfg.optim, *model, {.head = {"fc.*"}, .backbone_lr_scale = 0.1});
OptimizerBundle make_optimizer(const config::OptimSection& cfg, torch::nn::Module& module,
                               const GroupRules& rules = {});

/// Sets, per group, lr = lr · lr_scale[g]; momentum (sgd, rmsprop) or beta1 (adam, adamw) when
/// not NaN; weight decay for the groups that decay when not NaN.
void set_hyperparameters(OptimizerBundle& bundle, double lr, double momentum = NAN,
                         double weight_decay = NAN);

/// The current lr, momentum / beta1 and weight decay of group g (NaN where it has none).
struct GroupValues {
  double lr, momentum, weight_decay;
};
GroupValues group_values(OptimizerBundle& bundle, size_t g);

}  // namespace lathe::optim

namespace lathe::optim {

/// Moves every per-parameter state tensor of `optimizer` (moments, momentum buffers, ...) onto
/// its parameter's device, dtype-preserving and in its parameter's memory format (strides), as
/// fused kernels require. Run it after loading a state saved elsewhere: LibTorch restores a
/// state onto the device it was saved from, contiguous — cuda:0 for every rank, the CPU for a
/// CPU checkpoint resumed on a GPU, NCHW for a channels-last parameter. Returns how many
/// tensors it moved or re-laid out.
///
///   torch::load(*bundle.optimizer, in);
///   place_state_like_params(*bundle.optimizer);
int64_t place_state_like_params(torch::optim::Optimizer& optimizer);

}  // namespace lathe::optim
