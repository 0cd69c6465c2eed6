// The model zoo's registry: build a model by name from a config's model options.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <torch/nn/modules/container/any.h>

#include "lathe/config/config.h"

namespace lathe::models {

/// One zoo entry: its config name, a one-line description and how to build it from options.
struct ModelSpec {
  std::string name;
  std::string description;
  std::function<torch::nn::AnyModule(const config::Params&)> build;
};

/// Every model the zoo knows, in a fixed order.
const std::vector<ModelSpec>& model_specs();

/// Builds the model a config's model: section describes (its name plus that model's options).
/// An unknown name or an unknown option is a ConfigError naming the file and line.
///
///   auto model = lathe::models::build_model(cfg.model);
///   at::Tensor logits = model.forward<at::Tensor>(images);
torch::nn::AnyModule build_model(const config::ModelSection& model);

/// Number of parameters (trainable + frozen), as PyTorch's sum(p.numel()).
int64_t parameter_count(const torch::nn::Module& module);

}  // namespace lathe::models
