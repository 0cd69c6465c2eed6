// Module state dicts: PyTorch names, strict / non-strict loading with a report, weights files.
#include "lathe/ckpt/state_dict.h"

#include <map>

#include <torch/nn/module.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <fmt/ranges.h>

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
  for (const auto& [name, t] : given)
    if (!targets.count(name)) report.unexpected.push_back(name);

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

NamedTensors load_state_dict_file(const std::filesystem::path& file) {
  const std::string ext = file.extension().string();
  LATHE_CHECK(ext == ".safetensors", CheckpointError,
              "{}: unknown weights format '{}'; lathe reads .safetensors files", file.string(),
              ext);
  return load_safetensors(file).tensors;
}

LoadReport load_weights(torch::nn::Module& module, const std::filesystem::path& file,
                        bool strict) {
  return load_state_dict(module, load_safetensors(file).tensors, strict, file.string());
}

}  // namespace lathe::ckpt
