// Hugging Face folders describe the model: config.json's architecture picks the zoo model and its
// fields give that model's options, the way sizes come from the data.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "lathe/config/config.h"

namespace torch::nn {
class Module;
}

namespace lathe::models {

/// One zoo option a config.json gives, and the field it came from.
struct HfOption {
  enum class Kind { integer, real, boolean, text };
  std::string key;    ///< the zoo option ("num_key_value_heads", "rope_scaling")
  std::string value;  ///< as a config would write it ("8", "0.0001", "true", "llama3")
  Kind kind = Kind::integer;
  std::string
      field;  ///< the config.json field ("num_key_value_heads", "rope_parameters.rope_type")
};

/// What a config.json says: the architecture, the zoo model that builds it, its options.
struct HfModelConfig {
  std::filesystem::path file;  ///< FOLDER/config.json
  std::string architecture;    ///< "LlamaForCausalLM"
  std::string model;           ///< the zoo name: "llama"
  std::vector<HfOption> options;
};

/// The Hugging Face architectures lathe reads, each with the zoo model that builds it, in one
/// table: LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM → llama; GPT2LMHeadModel →
/// gpt2; BertModel → bert; BertForSequenceClassification → bert_classifier.
std::vector<std::pair<std::string, std::string>> hf_architectures();

/// Reads FOLDER/config.json. An architecture lathe lacks is a ConfigError naming it and the ones
/// it has; a field it cannot honour (a rope type other than default, linear and llama3, an
/// activation other than the family's) is a ConfigError naming the field and the file.
///
///   auto hf = lathe::models::read_hf_config("models/SmolLM2-135M");  // hf.model == "llama"
HfModelConfig read_hf_config(const std::filesystem::path& folder);

/// Whether `path` is a Hugging Face folder (a directory holding config.json).
bool is_hf_folder(const std::filesystem::path& path);

/// When model.pretrained is a Hugging Face folder: fills the model's options from its config.json
/// (recorded as coming from that file). model.name must be the zoo model of the architecture, and
/// an option the run config states must equal config.json's: either disagreement is a
/// ConfigError naming both sides. Returns one line per option for the run's log (nothing when
/// pretrained is no folder).
///
///   for (const auto& line : lathe::models::apply_hf_config(cfg.model)) log::info("{}", line);
std::vector<std::string> apply_hf_config(config::ModelSection& model);

/// config.json for a zoo `model` (llama or gpt2), as transformers reads it: the fields of `base`
/// (the config.json the run was fine-tuned from; empty path for none) kept, every field lathe's
/// options decide written from the model. Without a base the architecture follows from the
/// options: qkv_bias → Qwen2ForCausalLM, a sliding window on every layer → MistralForCausalLM,
/// else LlamaForCausalLM; options no architecture has together are an ExportError.
///
///   write_file_atomic(out / "config.json", lathe::models::hf_config_json(*model, {}));
std::string hf_config_json(const torch::nn::Module& model, const std::filesystem::path& base);

}  // namespace lathe::models
