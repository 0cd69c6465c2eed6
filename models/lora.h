// LoRA adapters with peft's maths, names and matching rules, on the zoo's linear layers (Linear,
// GPT-2's Conv1D) and on any module built from them.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lathe::models {

/// What to adapt and how (peft's LoraConfig: target_modules, r, lora_alpha, lora_dropout).
struct LoraOptions {
  /// Module names matched as peft matches a list: a module whose path equals a target or ends
  /// in "." + target ("query" adapts bert.encoder.layer.0.attention.self.query).
  std::vector<std::string> targets;
  /// Or one regular expression (ECMAScript) that a whole module path must match, as peft's
  /// target_modules given as a string (re.fullmatch).
  std::string target_regex;
  int64_t rank = 8;     ///< r
  double alpha = 8.0;   ///< lora_alpha; the update is scaled by alpha / rank
  double dropout = 0.0; ///< lora_dropout, on the adapter's input, in training only
};

/// A layer that can carry a LoRA adapter (peft's LoraLayer): y = base(x) + B(A(dropout(x))) ·
/// scaling, with lora_A [rank, in] and lora_B [out, rank] registered as children of the layer, so
/// state-dict names are peft's ("...query.lora_A.weight"). lathe::models::Linear and Conv1D are
/// hosts; apply_lora attaches adapters to them.
class LoraHost {
 public:
  virtual ~LoraHost() = default;
  bool has_adapter() const { return !lora_A.is_empty(); }
  /// `y` (the base layer's output for `x`) plus the adapter's update when one is attached.
  at::Tensor add_adapter(const at::Tensor& y, const at::Tensor& x, bool training);
  /// The base weight and whether it is stored [in, out] (peft's fan_in_fan_out: Conv1D).
  virtual at::Tensor& base_weight() = 0;
  virtual bool fan_in_fan_out() const = 0;

  torch::nn::Linear lora_A{nullptr}, lora_B{nullptr};
  double lora_scaling = 1.0;
  double lora_dropout = 0.0;
};

/// torch::nn::Linear that can carry a LoRA adapter: the same options, parameter names and
/// forward (without an adapter). The zoo's transformers use it; so can a user's own module, to
/// be adaptable by apply_lora.
///
///   lathe::models::Linear fc(lathe::models::LinearOptions(384, 4));
class LinearImpl : public torch::nn::LinearImpl, public LoraHost {
 public:
  using torch::nn::LinearImpl::LinearImpl;
  /// (..., in) → (..., out)
  at::Tensor forward(const at::Tensor& x);
  at::Tensor& base_weight() override { return weight; }
  bool fan_in_fan_out() const override { return false; }
};
TORCH_MODULE(Linear);
using LinearOptions = torch::nn::LinearOptions;

/// What apply_lora did: the adapted module paths, in module order, and the adapter's size.
struct LoraReport {
  std::vector<std::string> adapted;
  int64_t adapter_parameters = 0;
};

/// Attaches a fresh adapter to every module of `root` that `options` targets, initialised as
/// peft does (lora_A kaiming-uniform with a = sqrt(5), lora_B zeros, so the model's output is
/// unchanged), on the base weight's device and dtype, and freezes every other parameter
/// (requires_grad false: only adapters train; unfreeze a head afterwards). A target that matches
/// no module is a ConfigError naming it with the module names nearby; a matched module that is
/// no LoraHost (a torch::nn::Linear, a container) is a ConfigError naming its path and type.
///
///   lathe::models::LoraOptions o;
///   o.targets = {"query", "value"};
///   auto report = lathe::models::apply_lora(*model, o);  // then train; merge_lora(*model)
LoraReport apply_lora(torch::nn::Module& root, const LoraOptions& options);

/// Whether any module of `root` carries an adapter.
bool has_lora(const torch::nn::Module& root);

/// Folds every adapter into its base weight (W += B·A·scaling, transposed for Conv1D; peft's
/// merge_and_unload) and removes the adapters: `root` becomes the plain model again.
void merge_lora(torch::nn::Module& root);

/// The adapters' parameters by state-dict name ("h.0.attn.c_attn.lora_A.weight", ...).
std::vector<std::pair<std::string, at::Tensor>> lora_parameters(const torch::nn::Module& root);

/// The module paths holding an adapter, and whether each stores its weight [in, out].
std::vector<std::pair<std::string, bool>> lora_modules(const torch::nn::Module& root);

}  // namespace lathe::models
