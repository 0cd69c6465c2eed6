// PyTorch .pt / .pth state dicts (torch.save(model.state_dict())) read into NamedTensors.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "lathe/ckpt/safetensors.h"
#include "lathe/ckpt/state_dict.h"

namespace lathe::ckpt {

/// Reads a file written by `torch.save(model.state_dict())` (the zip format PyTorch writes
/// since 1.6) onto the CPU, names in the file's order. A dict that wraps the state dict under
/// "state_dict" or "model" (as many training scripts save it) is unwrapped. A missing file, a
/// file that is not a torch.save archive, or a dict holding anything other than tensors is a
/// CheckpointError naming the file (and the key).
///
///   auto tensors = lathe::ckpt::load_torch_state_dict("resnet18.pth");
NamedTensors load_torch_state_dict(const std::filesystem::path& file);

/// Where the unpickler finds a storage's bytes (an archive's data/<key> records).
struct PickleRecords {
  std::function<bool(const std::string&)> has;                  ///< whether the record exists
  std::function<size_t(const std::string&)> size;               ///< its size in bytes
  std::function<void(const std::string&, void*, size_t)> read;  ///< its first n bytes into dst
};

/// Runs a state dict's data.pkl (`pkl`) with its storages from `records` (big-endian ones are
/// swapped to the host's order). Every opcode checks the stack it needs, containers nest at most
/// 1000 deep, a storage's declared size is checked against its record before anything is
/// allocated, and a repeated key keeps its first position and its last value, as in torch.load.
/// Malformed input is a CheckpointError naming `origin`.
NamedTensors unpickle_state_dict(std::string_view pkl, const PickleRecords& records,
                                 const std::string& origin, bool big_endian = false);

/// Loads weights into `module` by the file's extension (load_state_dict_file): .safetensors, or
/// .pt / .pth / .bin (torch.save). Any other extension is a CheckpointError naming the file. See
/// load_state_dict for `strict` and the report.
///
///   lathe::ckpt::load_weights_any(*model, "resnet18-f37072fd.pth", /*strict=*/true);
LoadReport load_weights_any(torch::nn::Module& module, const std::filesystem::path& file,
                            bool strict = true);

}  // namespace lathe::ckpt
