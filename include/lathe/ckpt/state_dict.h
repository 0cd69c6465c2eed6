// State dicts of LibTorch modules by PyTorch names: extract, load with a report, weights files.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "lathe/ckpt/safetensors.h"

namespace torch::nn {
class Module;
}

namespace lathe::ckpt {

/// Parameters then buffers of `module`, named as PyTorch's state_dict() names them
/// ("features.0.weight", "features.1.running_mean", ...).
NamedTensors state_dict(const torch::nn::Module& module);

/// What load_state_dict found: keys the module has that the source lacks, keys the source has
/// that the module lacks, and tensors present in both with different shapes.
struct LoadReport {
  std::vector<std::string> missing;
  std::vector<std::string> unexpected;
  std::vector<std::string> mismatched;  ///< "name: file [10, 64] vs model [5, 64]"
  size_t loaded = 0;
  bool clean() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string summary() const;
};

/// Copies matching tensors into the module's parameters and buffers (dtype converted, device
/// kept). strict: any missing, unexpected or mismatched key is a CheckpointError naming the
/// tensors and `source`, and nothing is copied. Non-strict: matches load, the rest is reported.
/// A file tensor that shares its data with one that loads (a tied weight, e.g. GPT-2's
/// lm_head.weight aliasing transformer.wte.weight in a torch.save file) is not unexpected.
LoadReport load_state_dict(torch::nn::Module& module, const NamedTensors& tensors, bool strict,
                           const std::string& source);

/// Saves the module's state dict as safetensors (metadata "format": "pt", as PyTorch writes it).
void save_weights(const torch::nn::Module& module, const std::filesystem::path& file,
                  std::map<std::string, std::string> metadata = {});

/// The weights of a Hugging Face folder: model.safetensors, or the shards that
/// model.safetensors.index.json maps each tensor to (every shard a .safetensors file in the
/// folder; a tensor the index names that its shard lacks is a CheckpointError), or
/// pytorch_model.bin.
NamedTensors load_hf_weights(const std::filesystem::path& folder);

/// Reads a state dict from a weights file, chosen by extension: .safetensors, or .pt / .pth /
/// .bin written by torch.save(model.state_dict()) (see load_torch_state_dict); a folder is read
/// by load_hf_weights.
NamedTensors load_state_dict_file(const std::filesystem::path& file);

/// Loads a safetensors weights file into the module (see load_state_dict).
LoadReport load_weights(torch::nn::Module& module, const std::filesystem::path& file,
                        bool strict = true);

}  // namespace lathe::ckpt
