// Optimizer factory and learning-rate setter.
#include "lathe/optim/optimizer.h"

#include <torch/nn/module.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/sgd.h>

#include "lathe/core/error.h"

namespace lathe::optim {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const config::OptimSection& cfg,
                                                        torch::nn::Module& module) {
  std::vector<at::Tensor> decay, no_decay;
  for (auto& p : module.parameters()) {
    if (!p.requires_grad()) continue;
    (p.dim() >= 2 ? decay : no_decay).push_back(p);
  }
  LATHE_CHECK(!decay.empty() || !no_decay.empty(), TrainError,
              "the model has no trainable parameters (all frozen?); nothing to optimize");

  const auto groups = [&](auto make_options) {
    std::vector<torch::optim::OptimizerParamGroup> g;
    if (!decay.empty()) g.emplace_back(decay, make_options(cfg.weight_decay));
    if (!no_decay.empty()) g.emplace_back(no_decay, make_options(0.0));
    return g;
  };
  const auto betas = std::make_tuple(cfg.betas[0], cfg.betas[1]);
  if (cfg.name == "sgd") {
    return std::make_unique<torch::optim::SGD>(groups([&](double wd) {
      return std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(cfg.lr)
                                                            .momentum(cfg.momentum)
                                                            .nesterov(cfg.nesterov)
                                                            .weight_decay(wd));
    }), torch::optim::SGDOptions(cfg.lr));
  }
  if (cfg.name == "adam") {
    return std::make_unique<torch::optim::Adam>(groups([&](double wd) {
      return std::make_unique<torch::optim::AdamOptions>(
          torch::optim::AdamOptions(cfg.lr).betas(betas).weight_decay(wd));
    }), torch::optim::AdamOptions(cfg.lr));
  }
  if (cfg.name == "adamw") {
    return std::make_unique<torch::optim::AdamW>(groups([&](double wd) {
      return std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(cfg.lr).betas(betas).weight_decay(wd));
    }), torch::optim::AdamWOptions(cfg.lr));
  }
  throw ConfigError(fmt::format("optim.name: unknown optimizer '{}'; expected sgd, adam or adamw",
                                cfg.name));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace lathe::optim
