// LoRA adapters as Python's peft saves and loads them (adapter_model.safetensors +
// adapter_config.json), and model.lora applied to a run's model.
#pragma once

#include <filesystem>
#include <string>

#include "lathe/config/config.h"

namespace torch::nn {
class Module;
}

namespace lathe::ckpt {

inline constexpr const char* kAdapterConfigFile = "adapter_config.json";
inline constexpr const char* kAdapterWeightsFile = "adapter_model.safetensors";

/// Fills model.lora's auto values: with an adapter folder, its adapter_config.json says the
/// targets, rank and alpha (a value the config also gives must agree: a ConfigError naming both
/// sides); without one, rank and alpha default to peft's 8. `where` names the config in errors.
///
///   lathe::ckpt::resolve_lora(cfg.model, cfg.source);  // before writing the resolved config
void resolve_lora(config::ModelSection& model, const std::string& where);

/// Applies a resolved model.lora to a freshly built model (pretrained weights already loaded):
/// attaches the adapters (models::apply_lora: every other parameter frozen), loads the adapter
/// folder's weights when `load_weights` (not when resuming: the checkpoint has them), and lets
/// the parameters matching model.head train. Logs what it adapted and the trainable count.
void apply_lora_config(torch::nn::Module& module, const config::ModelSection& model,
                       bool load_weights);

/// Writes `dir`/adapter_model.safetensors (adapter tensors, and the model.head layers' as peft's
/// modules_to_save, named base_model.model.<state-dict name>) and `dir`/adapter_config.json
/// (peft_type LORA, r, lora_alpha, lora_dropout, target_modules, fan_in_fan_out for Conv1D,
/// modules_to_save, task_type), so that peft's PeftModel.from_pretrained(model, dir) loads it.
void save_adapter(const torch::nn::Module& module, const std::filesystem::path& dir,
                  const config::ModelSection& model);

/// Loads the weights of a peft adapter folder into a model with adapters attached: every adapter
/// tensor of the model must be in the file, and every tensor of the file must be the model's
/// (a CheckpointError naming the file and tensors otherwise).
void load_adapter(torch::nn::Module& module, const std::filesystem::path& dir);

}  // namespace lathe::ckpt
