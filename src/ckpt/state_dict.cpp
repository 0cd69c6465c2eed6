// Module state dicts: PyTorch names, strict / non-strict loading with a report, weights files.
#include "lathe/ckpt/state_dict.h"

#include <fstream>
#include <map>
#include <set>

#include <torch/nn/module.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lathe/ckpt/torch_pickle.h"
#include "lathe/core/error.h"

namespace lathe::ckpt {

NamedTensors state_dict(const torch::nn::Module& module) {
  NamedTensors out;
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    out.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(/*recurse=*/true))
    out.emplace_back(item.key(), item.value());
  return out;
}

std::string LoadReport::summary() const {
  std::string s = fmt::format("{} tensors loaded", loaded);
  if (!missing.empty()) s += fmt::format("; missing in file: {}", fmt::join(missing, ", "));
  if (!unexpected.empty()) s += fmt::format("; not in model: {}", fmt::join(unexpected, ", "));
  if (!mismatched.empty()) s += fmt::format("; shape mismatch: {}", fmt::join(mismatched, "; "));
  return s;
}

LoadReport load_state_dict(torch::nn::Module& module, const NamedTensors& tensors, bool strict,
                           const std::string& source) {
  std::map<std::string, at::Tensor> targets;
  for (auto& [name, t] : state_dict(module)) targets.emplace(name, t);
  std::map<std::string, const at::Tensor*> given;
  for (const auto& [name, t] : tensors) given.emplace(name, &t);

  LoadReport report;
  std::vector<std::pair<at::Tensor, const at::Tensor*>> copies;
  for (const auto& [name, target] : targets) {
    const auto it = given.find(name);
    if (it == given.end()) {
      report.missing.push_back(name);
    } else if (it->second->sizes() != target.sizes()) {
      report.mismatched.push_back(fmt::format("{}: file [{}] vs model [{}]", name,
                                              fmt::join(it->second->sizes(), ", "),
                                              fmt::join(target.sizes(), ", ")));
    } else {
      copies.emplace_back(target, it->second);
    }
  }
  // A file tensor that aliases one being loaded (a tied weight such as GPT-2's lm_head.weight,
  // which torch.save stores as a view of transformer.wte.weight) is not reported as unexpected.
  const auto is_tied_copy = [&](const at::Tensor& t) {
    for (const auto& [target, src] : copies)
      if (t.numel() > 0 && src->data_ptr() == t.data_ptr() && src->sizes() == t.sizes() &&
          src->strides() == t.strides())
        return true;
    return false;
  };
  for (const auto& [name, t] : given)
    if (!targets.count(name) && !is_tied_copy(*t)) report.unexpected.push_back(name);

  if (strict && !report.clean()) {
    throw CheckpointError(fmt::format(
        "{}: weights do not fit the model ({}); fix the file or the model config, or load "
        "non-strictly to skip these tensors",
        source, report.summary()));
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, src] : copies) target.copy_(*src);
  report.loaded = copies.size();
  return report;
}

void save_weights(const torch::nn::Module& module, const std::filesystem::path& file,
                  std::map<std::string, std::string> metadata) {
  metadata.emplace("format", "pt");
  save_safetensors(file, state_dict(module), metadata);
}

NamedTensors load_hf_weights(const std::filesystem::path& folder) {
  namespace fs = std::filesystem;
  if (fs::is_regular_file(folder / "model.safetensors"))
    return load_safetensors(folder / "model.safetensors").tensors;
  const fs::path index = folder / "model.safetensors.index.json";
  if (!fs::is_regular_file(index)) {
    for (const char* torch_file : {"pytorch_model.bin", "model.pt"})
      if (fs::is_regular_file(folder / torch_file)) return load_torch_state_dict(folder / torch_file);
    throw CheckpointError(fmt::format(
        "{}: no weights; a Hugging Face folder holds model.safetensors, or shards with "
        "model.safetensors.index.json (or pytorch_model.bin)",
        folder.string()));
  }
  std::ifstream in(index, std::ios::binary);
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  LATHE_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
              CheckpointError, "{}: expected an object with a 'weight_map' (tensor → shard file)",
              index.string());
  // shard file → the tensors the map puts there, in the map's order
  std::map<std::string, std::set<std::string>> wanted;
  for (const auto& [name, shard] : j["weight_map"].items()) {
    LATHE_CHECK(shard.is_string(), CheckpointError, "{}: weight_map[\"{}\"] is {}, expected a "
                "file name", index.string(), name, shard.dump());
    const std::string file = shard.get<std::string>();
    LATHE_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." &&
                    file != ".." && file.ends_with(".safetensors"),
                CheckpointError,
                "{}: weight_map[\"{}\"] = \"{}\": a shard is a .safetensors file in the same "
                "folder",
                index.string(), name, file);
    wanted[file].insert(name);
  }
  NamedTensors out;
  for (const auto& [file, names] : wanted) {
    const SafetensorsFile shard = load_safetensors(folder / file);
    std::set<std::string> found;
    for (const auto& [name, tensor] : shard.tensors)
      if (names.count(name) != 0) {
        out.emplace_back(name, tensor);
        found.insert(name);
      }
    for (const auto& name : names)
      LATHE_CHECK(found.count(name) != 0, CheckpointError,
                  "{}: the index puts tensor '{}' in {}, but that shard has no such tensor",
                  index.string(), name, file);
  }
  return out;
}

NamedTensors load_state_dict_file(const std::filesystem::path& file) {
  if (std::filesystem::is_directory(file)) return load_hf_weights(file);
  const std::string ext = file.extension().string();
  if (ext == ".pt" || ext == ".pth" || ext == ".bin") return load_torch_state_dict(file);
  LATHE_CHECK(ext == ".safetensors", CheckpointError,
              "{}: unknown weights format '{}'; lathe reads .safetensors and torch.save "
              ".pt / .pth / .bin state dicts",
              file.string(), ext);
  return load_safetensors(file).tensors;
}

LoadReport load_weights(torch::nn::Module& module, const std::filesystem::path& file,
                        bool strict) {
  return load_state_dict(module, load_safetensors(file).tensors, strict, file.string());
}

}  // namespace lathe::ckpt
