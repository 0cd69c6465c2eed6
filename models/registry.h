// The model zoo's registry: build a model by name from a config's model options; a user's own
// models join it by name (register_model).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <torch/nn/modules/container/any.h>

#include "lathe/config/config.h"
#include "lathe/config/data_info.h"
#include "models/estimator.h"
#include "models/signature.h"

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
  /// For a model that is not a torch module (xgboost, random_forest, svm): makes its Estimator
  /// from the options (reading every one, then p.check_all_used()). run then fits it on the
  /// loaded splits instead of training with the Trainer; `build` is empty for such entries.
  std::function<std::shared_ptr<Estimator>(const config::Params&)> estimator = nullptr;
};

/// Every model the zoo knows, in a fixed order (registered user models are not among them).
const std::vector<ModelSpec>& model_specs();

/// What a user model's forward takes, for export: its inputs at the sizes a run trained at.
using SignatureFn = std::function<ModelSignature(const torch::nn::Module&, const SignatureSizes&)>;

/// Adds a model of the user's under `spec.name`: from then on a config's `model: {name: ...}`
/// builds it — train_from_config, evaluate_run and export_run included — with its `auto` size
/// options filled from the data like a zoo model's. `signature` tells export_run its inputs
/// (without it, exporting a run of this model is an ExportError saying so). Register before
/// loading configs that use it, from one thread; the name must be new (a zoo name or an earlier
/// registration is a ConfigError). The spec's build reads its options from `p` and must call
/// p.check_all_used(), so that a misspelt option is an error naming the file and line.
///
///   lathe::models::register_model(
///       {"tiny_cnn", "two convolutions and a linear head", {{"num_classes", DataSize::classes}},
///        [](const lathe::config::Params& p) {
///          auto net = TinyCnn(p.get_int("num_classes", 10), p.get_int("width", 16));
///          p.check_all_used();
///          return torch::nn::AnyModule(net);
///        }},
///       [](const torch::nn::Module&, const lathe::models::SignatureSizes& s) {
///         lathe::models::InputSignature in{"images", {2, 1, s.side, s.side}, 0, {{0, "batch"}}};
///         return lathe::models::ModelSignature{{in}, "logits"};
///       });
void register_model(ModelSpec spec, SignatureFn signature = {});

/// The names of the models register_model added, in order.
std::vector<std::string> registered_models();

/// The entry named `model.name` (the zoo's or a registered one); a ConfigError naming the file
/// and line otherwise.
const ModelSpec& model_spec(const config::ModelSection& model);

/// The signature of `module`, built from `model`: a registered model's signature function, else
/// the zoo's model_signature. A registered model without one is an ExportError saying so.
///
///   auto sig = lathe::models::model_signature(cfg.model, *model.ptr(), {.side = 28});
ModelSignature model_signature(const config::ModelSection& model, const torch::nn::Module& module,
                               const SignatureSizes& sizes);

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

/// The Estimator a config's model: section describes when its table entry is one (xgboost,
/// random_forest, svm), unfitted, its options checked; null for torch models.
///
///   if (auto est = lathe::models::make_estimator(cfg.model)) est->fit(x, y, task);
std::shared_ptr<Estimator> make_estimator(const config::ModelSection& model);

/// Number of parameters (trainable + frozen), as PyTorch's sum(p.numel()).
int64_t parameter_count(const torch::nn::Module& module);

/// The parts of `module` that train faster channels-last (NHWC) on the CPU, for
/// trainer.channels_last: auto there: the trainer holds their 4-d weights channels-last, feeds
/// channels-last batches, and the model converts its activation where the next part's weights
/// change format. A measured choice, per zoo family (one thread; the measurements are in
/// docs/benchmarks.md):
///   convnet           the whole model (bench/demo_epoch.py; oneDNN's NHWC max pooling and batch
///                     norm are vectorised over channels, the NCHW pooling kernel is scalar)
///   resnet18, -34     the stem, layer1 and layer2, where NHWC convolutions are faster;
///                     layer3 and layer4, where they are slower, stay NCHW
///                     (bench/conv_layouts.py, ResNet-18's convolutions forward + backward);
///                     measured with the 32×32 stem — with the 224×224 one the early stages are
///                     larger still and its max pool is the NHWC-vectorised one, as in convnet
/// Empty for families not measured (and your own modules): they stay NCHW on the CPU.
std::vector<std::shared_ptr<torch::nn::Module>> channels_last_parts_on_cpu(
    torch::nn::Module& module);

}  // namespace lathe::models
