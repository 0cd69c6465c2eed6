// Which transformer layer each parameter of a zoo model is in, for layer-wise lr decay.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace torch::nn {
class Module;
}

namespace lathe::models {

/// A model's layer structure as timm's param_groups_layer_decay numbers it (its ViT grouping,
/// after BEiT): id 0 = the embeddings, 1 … num_layers = the blocks, the final norm (GPT-2's ln_f,
/// ViT's encoder.ln) with the top block (num_layers), everything else above — pooler, head —
/// num_layers + 1. A parameter of id i then trains at lr · decay^(num_layers + 1 − i).
struct LayerIds {
  int64_t num_layers = 0;
  std::function<int64_t(const std::string&)> of;  ///< parameter name → layer id
};

/// The layer ids of zoo model `model_name` (gpt2, bert, bert_classifier, vit), its blocks
/// counted on `module`'s parameters (adapters inside a block share its id). Any other model is
/// a ConfigError naming it and the models that have layers.
///
///   auto layers = lathe::models::transformer_layers("vit", *model);  // layers.of("heads.head.weight")
LayerIds transformer_layers(const std::string& model_name, const torch::nn::Module& module);

}  // namespace lathe::models
