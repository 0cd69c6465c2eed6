// peft's adapter files (adapter_config.json, adapter_model.safetensors) and model.lora in a run.
#include "lathe/ckpt/adapter.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include "lathe/ckpt/safetensors.h"
#include "lathe/ckpt/state_dict.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/log.h"
#include "models/lora.h"
#include "models/registry.h"

namespace lathe::ckpt {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

/// peft prefixes every name of a saved adapter with this (PeftModel.base_model.model).
constexpr std::string_view kPeftPrefix = "base_model.model.";

/// What of an adapter_config.json lathe reads: the adapter's shape and what it adapts.
struct PeftConfig {
  std::vector<std::string> targets;
  std::string target_regex;
  int64_t rank = 0;
  double alpha = 0;
};

PeftConfig read_peft_config(const fs::path& dir) {
  const fs::path file = dir / kAdapterConfigFile;
  const std::string why = not_a_regular_file(file);
  LATHE_CHECK(why.empty(), CheckpointError,
              "{}: cannot read the adapter config ({}); model.lora.adapter names a folder that "
              "peft's save_pretrained wrote (adapter_config.json, adapter_model.safetensors)",
              file.string(), why);
  std::ifstream in(file, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  const json j = json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
  LATHE_CHECK(j.is_object(), CheckpointError, "{}: not a JSON object; the file is damaged",
              file.string());
  const auto field = [&](const char* key) -> const json& {
    static const json null;
    const auto it = j.find(key);
    return it == j.end() ? null : *it;
  };
  LATHE_CHECK(field("peft_type") == "LORA", CheckpointError,
              "{}: peft_type is {}, not LORA; lathe loads LoRA adapters only", file.string(),
              field("peft_type").dump());
  for (const char* flag : {"use_dora", "use_rslora", "use_qalora"})
    LATHE_CHECK(!field(flag).is_boolean() || !field(flag).get<bool>(), CheckpointError,
                "{}: {} is true; lathe's LoRA is the plain kind (no DoRA, rsLoRA, QA-LoRA)",
                file.string(), flag);
  LATHE_CHECK(field("bias").is_null() || field("bias") == "none", CheckpointError,
              "{}: bias = {}; lathe's adapters train no biases (bias 'none')", file.string(),
              field("bias").dump());
  for (const char* unsupported : {"layers_to_transform", "rank_pattern", "alpha_pattern"})
    LATHE_CHECK(field(unsupported).is_null() || field(unsupported).empty(), CheckpointError,
                "{}: {} is set ({}); lathe gives every adapted layer the same rank and alpha",
                file.string(), unsupported, field(unsupported).dump());
  PeftConfig c;
  try {
    c.rank = field("r").get<int64_t>();
    c.alpha = field("lora_alpha").get<double>();
    const json& t = field("target_modules");
    if (t.is_string()) c.target_regex = t.get<std::string>();
    else c.targets = t.get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    throw CheckpointError(fmt::format(
        "{}: r, lora_alpha and target_modules must be a number, a number and a list of names "
        "or a string ({})",
        file.string(), e.what()));
  }
  return c;
}

models::LoraOptions lora_options(const config::LoraSection& s) {
  models::LoraOptions o;
  o.targets = s.targets;
  o.target_regex = s.target_regex;
  o.rank = s.rank;
  o.alpha = s.alpha;
  o.dropout = s.dropout;
  return o;
}

bool is_head(const std::string& name, const config::ModelSection& model) {
  return std::any_of(model.head.begin(), model.head.end(),
                     [&](const std::string& p) { return config::matches_pattern(name, p); });
}

/// peft's task_type for a zoo model (what PeftModelFor<task> wraps), or null.
json task_type(const std::string& model_name) {
  if (model_name == "bert_classifier") return "SEQ_CLS";
  if (model_name == "gpt2" || model_name == "llama") return "CAUSAL_LM";
  if (model_name == "bert") return "FEATURE_EXTRACTION";
  return nullptr;
}

}  // namespace

void resolve_lora(config::ModelSection& model, const std::string& where) {
  auto& lora = model.lora;
  if (!lora.enabled()) return;
  if (!lora.adapter.empty()) {
    const PeftConfig peft = read_peft_config(lora.adapter);
    const std::string file = (fs::path(lora.adapter) / kAdapterConfigFile).string();
    const auto agree = [&](bool same, const std::string& key, const std::string& ours,
                           const std::string& theirs) {
      LATHE_CHECK(same, ConfigError,
                  "{}: model.lora.{} = {}, but the adapter {} has {}; remove model.lora.{} (the "
                  "adapter says it) or use another adapter",
                  where, key, ours, file, theirs, key);
    };
    if (lora.rank != 0) agree(lora.rank == peft.rank, "rank", fmt::format("{}", lora.rank),
                              fmt::format("r = {}", peft.rank));
    if (lora.alpha != 0) agree(lora.alpha == peft.alpha, "alpha", fmt::format("{}", lora.alpha),
                               fmt::format("lora_alpha = {}", peft.alpha));
    if (!lora.targets.empty() || !lora.target_regex.empty()) {
      auto ours = lora.targets, theirs = peft.targets;
      std::sort(ours.begin(), ours.end());
      std::sort(theirs.begin(), theirs.end());
      agree(ours == theirs && lora.target_regex == peft.target_regex, "targets",
            lora.target_regex.empty() ? fmt::format("[{}]", fmt::join(lora.targets, ", "))
                                      : "'" + lora.target_regex + "'",
            peft.target_regex.empty()
                ? fmt::format("target_modules = [{}]", fmt::join(peft.targets, ", "))
                : "target_modules = '" + peft.target_regex + "'");
    }
    lora.rank = peft.rank;
    lora.alpha = peft.alpha;
    lora.targets = peft.targets;
    lora.target_regex = peft.target_regex;
  }
  if (lora.rank == 0) lora.rank = 8;  // peft's LoraConfig defaults
  if (lora.alpha == 0) lora.alpha = 8;
}

void apply_lora_config(torch::nn::Module& module, const config::ModelSection& model,
                       bool load_weights) {
  const auto report = models::apply_lora(module, lora_options(model.lora));
  if (load_weights && !model.lora.adapter.empty()) load_adapter(module, model.lora.adapter);
  int64_t head = 0;
  for (auto& item : module.named_parameters())
    if (is_head(item.key(), model)) {
      item.value().set_requires_grad(true);
      head += item.value().numel();
    }
  LATHE_CHECK(model.head.empty() || head > 0, ConfigError,
              "model.head: no parameter name matches {}; names look like '{}'",
              fmt::join(model.head, ", "), module.named_parameters()[0].key());
  log::info("lora: rank {}, alpha {} on {} layers ({} … {}); trainable: {} adapter + {} head "
            "parameters of {}",
            model.lora.rank, model.lora.alpha, report.adapted.size(), report.adapted.front(),
            report.adapted.back(), report.adapter_parameters, head,
            models::parameter_count(module));
}

void save_adapter(const torch::nn::Module& module, const fs::path& dir,
                  const config::ModelSection& model) {
  NamedTensors tensors;
  std::set<std::string> head_modules;
  for (const auto& [name, t] : state_dict(module)) {
    const bool adapter = name.find(".lora_A.") != std::string::npos ||
                         name.find(".lora_B.") != std::string::npos;
    if (!adapter && !is_head(name, model)) continue;
    tensors.emplace_back(std::string(kPeftPrefix) + name, t);
    if (!adapter) head_modules.insert(name.substr(0, name.rfind('.')));
  }
  bool fan_in_fan_out = false;
  for (const auto& m : models::lora_modules(module)) fan_in_fan_out = fan_in_fan_out || m.second;
  const auto& lora = model.lora;
  json config = {
      {"peft_type", "LORA"},
      {"task_type", task_type(model.name)},
      {"base_model_name_or_path", nullptr},
      {"r", lora.rank},
      {"lora_alpha", lora.alpha},
      {"lora_dropout", lora.dropout},
      {"target_modules", lora.target_regex.empty() ? json(lora.targets) : json(lora.target_regex)},
      {"fan_in_fan_out", fan_in_fan_out},
      {"bias", "none"},
      {"modules_to_save", head_modules.empty() ? json(nullptr) : json(head_modules)},
      {"init_lora_weights", true},
      {"inference_mode", true},
      {"use_rslora", false},
      {"use_dora", false},
  };
  fs::create_directories(dir);
  save_safetensors(dir / kAdapterWeightsFile, tensors, {{"format", "pt"}});
  write_file_atomic(dir / kAdapterConfigFile, config.dump(2) + "\n");
}

void load_adapter(torch::nn::Module& module, const fs::path& dir) {
  const fs::path file = dir / kAdapterWeightsFile;
  NamedTensors tensors = load_safetensors(file).tensors;
  for (auto& [name, t] : tensors) {
    LATHE_CHECK(name.starts_with(kPeftPrefix), CheckpointError,
                "{}: tensor '{}' does not start with '{}': not an adapter saved by peft's "
                "save_pretrained",
                file.string(), name, kPeftPrefix);
    name = name.substr(kPeftPrefix.size());
  }
  const LoadReport report = load_state_dict(module, tensors, /*strict=*/false, file.string());
  std::vector<std::string> missing;
  for (const auto& name : report.missing)
    if (name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos)
      missing.push_back(name);
  LATHE_CHECK(missing.empty() && report.unexpected.empty() && report.mismatched.empty(),
              CheckpointError,
              "{}: the adapter does not fit the model ({}{}{}); it was saved for another model "
              "or other targets",
              file.string(),
              missing.empty() ? "" : fmt::format("adapters missing in the file: {}; ",
                                                 fmt::join(missing, ", ")),
              report.unexpected.empty()
                  ? ""
                  : fmt::format("not in the model: {}; ", fmt::join(report.unexpected, ", ")),
              report.mismatched.empty()
                  ? ""
                  : fmt::format("shape mismatch: {}", fmt::join(report.mismatched, "; ")));
  log::info("adapter {}: {} tensors loaded", dir.string(), report.loaded);
}

}  // namespace lathe::ckpt
