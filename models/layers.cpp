// Layer ids of the zoo's transformers by parameter name: embeddings, numbered blocks, the rest.
#include "models/layers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <optional>
#include <regex>
#include <vector>

#include "lathe/core/error.h"

namespace lathe::models {
namespace {

/// One model family: its zoo names, the embeddings' parameter names, the blocks' prefix (its one
/// group is the block index) and the final norm after the blocks ("" when none).
struct LayerRule {
  std::vector<std::string> models;
  std::string embeddings;
  std::string block;
  std::string final_norm;
};

const std::vector<LayerRule>& rules() {
  static const std::vector<LayerRule> table = {
      {{"gpt2"}, R"(^transformer\.(wte|wpe)\.)", R"(^transformer\.h\.(\d+)\.)",
       R"(^transformer\.ln_f\.)"},
      {{"llama"}, R"(^model\.embed_tokens\.)", R"(^model\.layers\.(\d+)\.)", R"(^model\.norm\.)"},
      {{"bert", "bert_classifier"}, R"(^(bert\.)?embeddings\.)",
       R"(^(?:bert\.)?encoder\.layer\.(\d+)\.)", ""},  // post-norm: no final norm
      {{"vit"}, R"(^(class_token$|conv_proj\.|encoder\.pos_embedding$))",
       R"(^encoder\.layers\.encoder_layer_(\d+)\.)", R"(^encoder\.ln\.)"},
  };
  return table;
}

}  // namespace

LayerIds transformer_layers(const std::string& model_name, const torch::nn::Module& module) {
  std::vector<std::string> known;
  for (const auto& rule : rules()) {
    known.insert(known.end(), rule.models.begin(), rule.models.end());
    if (std::find(rule.models.begin(), rule.models.end(), model_name) == rule.models.end())
      continue;
    const std::regex embeddings(rule.embeddings), block(rule.block);
    const std::optional<std::regex> final_norm =
        rule.final_norm.empty() ? std::nullopt : std::optional<std::regex>(rule.final_norm);
    const auto block_of = [block](const std::string& name) -> int64_t {
      std::smatch m;
      return std::regex_search(name, m, block) ? std::stoll(m[1].str()) : -1;
    };
    int64_t blocks = 0;
    for (const auto& item : module.named_parameters())
      blocks = std::max(blocks, block_of(item.key()) + 1);
    LayerIds ids;
    ids.num_layers = blocks;
    ids.of = [embeddings, block_of, final_norm, blocks](const std::string& name) -> int64_t {
      if (std::regex_search(name, embeddings)) return 0;
      if (final_norm && std::regex_search(name, *final_norm)) return blocks;  // with the top block
      const int64_t b = block_of(name);
      return b >= 0 ? b + 1 : blocks + 1;
    };
    return ids;
  }
  throw ConfigError(fmt::format(
      "optim.layer_decay: model '{}' has no transformer layer structure (embeddings, numbered "
      "blocks, head); layer decay applies to {}: remove optim.layer_decay or set it to 1",
      model_name, fmt::join(known, ", ")));
}

}  // namespace lathe::models
