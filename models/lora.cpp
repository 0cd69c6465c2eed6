// LoRA: the adapter's forward, attaching adapters by peft's target rules, merging them back.
#include "models/lora.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/init.h>

#include <algorithm>
#include <cmath>
#include <regex>
#include <set>

#include "lathe/config/params.h"
#include "lathe/core/error.h"

namespace lathe::models {

at::Tensor LoraHost::add_adapter(const at::Tensor& y, const at::Tensor& x, bool training) {
  if (!has_adapter()) return y;
  const at::Tensor in = training && lora_dropout > 0 ? at::dropout(x, lora_dropout, true) : x;
  return y + lora_B->forward(lora_A->forward(in)) * lora_scaling;  // (..., out)
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  return add_adapter(torch::nn::LinearImpl::forward(x), x, is_training());
}

namespace {

/// peft's rule for a list of targets: the path equals one, or ends in "." + one.
bool matches_target(const std::string& path, const std::string& target) {
  return path == target ||
         (path.size() > target.size() && path.ends_with(target) &&
          path[path.size() - target.size() - 1] == '.');
}

std::string last_component(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

/// "did you mean" and the names adapters can go on, for a target that matched nothing.
std::string nearby_names(const std::string& target, const std::vector<std::string>& hosts) {
  std::vector<std::string> names;
  for (const auto& h : hosts) {
    const std::string last = last_component(h);
    if (std::find(names.begin(), names.end(), last) == names.end()) names.push_back(last);
  }
  const std::string hint = config::closest_key(target, names);
  if (names.empty()) return "; the module has no layer that can carry an adapter";
  return fmt::format("{}; adaptable layers end in: {} (e.g. {})",
                     hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint),
                     fmt::join(names, ", "), hosts.front());
}

}  // namespace

LoraReport apply_lora(torch::nn::Module& root, const LoraOptions& options) {
  LATHE_CHECK(options.rank >= 1, ConfigError, "model.lora.rank = {} must be at least 1",
              options.rank);
  LATHE_CHECK(options.dropout >= 0 && options.dropout < 1, ConfigError,
              "model.lora.dropout = {} must be in [0, 1)", options.dropout);
  LATHE_CHECK(options.targets.empty() != options.target_regex.empty(), ConfigError,
              "model.lora: give either targets (module names) or target_regex (one regular "
              "expression), not {}",
              options.targets.empty() ? "neither" : "both");
  std::regex regex;
  if (!options.target_regex.empty()) {
    try {
      regex = std::regex(options.target_regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw ConfigError(fmt::format("model.lora.target_regex = '{}' is not a regular expression "
                                    "({})",
                                    options.target_regex, e.what()));
    }
  }
  std::vector<std::string> hosts;
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> matched;
  std::set<std::string> used;  // targets that matched something
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    const std::string& path = item.key();
    if (dynamic_cast<LoraHost*>(item.value().get())) hosts.push_back(path);
    bool hit = false;
    if (!options.target_regex.empty()) {
      hit = std::regex_match(path, regex);
    } else {
      for (const auto& t : options.targets)
        if (matches_target(path, t)) {
          used.insert(t);
          hit = true;
        }
    }
    if (hit) matched.emplace_back(path, item.value());
  }
  for (const auto& t : options.targets)
    LATHE_CHECK(used.count(t), ConfigError, "model.lora.targets: '{}' matches no module{}", t,
                nearby_names(t, hosts));
  LATHE_CHECK(!matched.empty(), ConfigError,
              "model.lora.target_regex = '{}' matches no module path (it must match a whole "
              "path){}",
              options.target_regex,
              hosts.empty() ? std::string() : fmt::format(", e.g. {}", hosts.front()));
  for (const auto& [path, module] : matched)
    LATHE_CHECK(dynamic_cast<LoraHost*>(module.get()), ConfigError,
                "model.lora: target '{}' is a {}, which cannot carry an adapter: LoRA adapts "
                "lathe::models::Linear and GPT-2's Conv1D layers{}",
                path, module->name(),
                module->name() == "torch::nn::LinearImpl"
                    ? " (build it as lathe::models::Linear: same options, names and forward)"
                    : "; name the linear layers inside it");

  for (auto& p : root.parameters()) p.set_requires_grad(false);  // only adapters train
  LoraReport report;
  const double scaling = options.alpha / static_cast<double>(options.rank);
  for (const auto& [path, module] : matched) {
    auto* host = dynamic_cast<LoraHost*>(module.get());
    LATHE_CHECK(!host->has_adapter(), ConfigError, "model.lora: '{}' already has an adapter",
                path);
    const at::Tensor& w = host->base_weight();
    const int64_t in = w.size(host->fan_in_fan_out() ? 0 : 1);
    const int64_t out = w.size(host->fan_in_fan_out() ? 1 : 0);
    torch::nn::Linear a(torch::nn::LinearOptions(in, options.rank).bias(false));  // [rank, in]
    torch::nn::Linear b(torch::nn::LinearOptions(options.rank, out).bias(false));  // [out, rank]
    {
      torch::NoGradGuard no_grad;
      torch::nn::init::kaiming_uniform_(a->weight, std::sqrt(5.0));  // peft's init
      torch::nn::init::zeros_(b->weight);
    }
    a->to(w.device(), w.scalar_type());
    b->to(w.device(), w.scalar_type());
    a->train(module->is_training());
    b->train(module->is_training());
    host->lora_A = module->register_module("lora_A", a);
    host->lora_B = module->register_module("lora_B", b);
    host->lora_scaling = scaling;
    host->lora_dropout = options.dropout;
    report.adapted.push_back(path);
    report.adapter_parameters += a->weight.numel() + b->weight.numel();
  }
  return report;
}

bool has_lora(const torch::nn::Module& root) { return !lora_modules(root).empty(); }

std::vector<std::pair<std::string, bool>> lora_modules(const torch::nn::Module& root) {
  std::vector<std::pair<std::string, bool>> out;
  for (const auto& item : root.named_modules("", /*include_self=*/false))
    if (const auto* host = dynamic_cast<const LoraHost*>(item.value().get());
        host != nullptr && host->has_adapter())
      out.emplace_back(item.key(), host->fan_in_fan_out());
  return out;
}

void merge_lora(torch::nn::Module& root) {
  torch::NoGradGuard no_grad;
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    auto* host = dynamic_cast<LoraHost*>(item.value().get());
    if (host == nullptr || !host->has_adapter()) continue;
    // peft's get_delta_weight: transpose(B @ A, fan_in_fan_out) * scaling, added in place.
    at::Tensor delta = at::matmul(host->lora_B->weight, host->lora_A->weight);  // [out, in]
    if (host->fan_in_fan_out()) delta = delta.t();
    host->base_weight().add_((delta * host->lora_scaling).to(host->base_weight().scalar_type()));
    item.value()->unregister_module("lora_A");
    item.value()->unregister_module("lora_B");
    host->lora_A = torch::nn::Linear(nullptr);
    host->lora_B = torch::nn::Linear(nullptr);
  }
}

std::vector<std::pair<std::string, at::Tensor>> lora_parameters(const torch::nn::Module& root) {
  std::set<std::string> names;
  for (const auto& m : lora_modules(root)) {
    names.insert(m.first + ".lora_A.weight");
    names.insert(m.first + ".lora_B.weight");
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : root.named_parameters())
    if (names.count(item.key())) out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace lathe::models
