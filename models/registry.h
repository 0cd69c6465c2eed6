// The model zoo's registry: build a model by name from a config's model options.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <torch/nn/modules/container/any.h>

#include "lathe/config/config.h"
#include "lathe/config/data_info.h"

namespace lathe::models {

/// What of the data a size option takes (DataInfo).
enum class DataSize {
  in_channels,  ///< the images' channels
  image_size,   ///< the images' side
  in_features,  ///< the table's features after preprocessing
  classes,      ///< the number of classes (classification data only)
  outputs,      ///< classes for classification, 1 for regression
  vocab_size,   ///< the text's vocabulary
};

/// A size option of a zoo model that defaults to `auto`: filled from the data, checked when given.
struct SizeOption {
  std::string key;
  DataSize from;
};

/// One zoo entry: its config name, a one-line description, its size options and how to build it
/// from options.
struct ModelSpec {
  std::string name;
  std::string description;
  std::vector<SizeOption> sizes;
  std::function<torch::nn::AnyModule(const config::Params&)> build;
  /// Takes model.gradient_checkpointing (activation checkpointing, models/checkpoint.h); for the
  /// other models the key is a ConfigError naming the model.
  bool gradient_checkpointing = false;
};

/// Every model the zoo knows, in a fixed order.
const std::vector<ModelSpec>& model_specs();

/// The zoo entry named `model.name`; a ConfigError naming the file and line otherwise.
const ModelSpec& model_spec(const config::ModelSection& model);

/// Fills the model's size options that are `auto` (absent, or written `auto`) from the data and
/// checks those given against it: a disagreement is a ConfigError naming both sides, e.g.
/// `run.yaml:20: model.num_classes = 2, but the data has 3 classes (barbera, barolo, grignolino)`.
/// Returns one line per size, "num_classes = 3 (from the data: 3 classes (...))" or
/// "in_channels = 1 (given, agrees with the data)", for the run's log.
///
///   auto lines = lathe::models::resolve_sizes(cfg.model, splits.info);
std::vector<std::string> resolve_sizes(config::ModelSection& model, const config::DataInfo& data);

/// Builds the model a config's model: section describes (its name plus that model's options).
/// An unknown name or an unknown option is a ConfigError naming the file and line. Size options
/// still `auto` (no data resolved them, e.g. `lathe info --model`) take the model's defaults.
///
///   auto model = lathe::models::build_model(cfg.model);
///   at::Tensor logits = model.forward<at::Tensor>(images);
torch::nn::AnyModule build_model(const config::ModelSection& model);

/// Number of parameters (trainable + frozen), as PyTorch's sum(p.numel()).
int64_t parameter_count(const torch::nn::Module& module);

}  // namespace lathe::models
