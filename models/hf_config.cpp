// config.json → zoo options: one table of architectures, a reader per family, and the check of a
// run config's stated options against the file.
#include "models/hf_config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "lathe/core/error.h"
#include "models/transformer/gpt2.h"
#include "models/transformer/llama.h"

namespace lathe::models {
namespace {

using json = nlohmann::json;
using Kind = HfOption::Kind;

/// Reads fields of one config.json into options, every error naming the file and the field.
class Reader {
 public:
  Reader(const json& j, const std::filesystem::path& file, std::vector<HfOption>& out)
      : j_(j), file_(file), out_(out) {}

  bool has(const std::string& field) const { return j_.contains(field) && !j_[field].is_null(); }
  const json& at(const std::string& field) const { return j_[field]; }

  int64_t integer(const std::string& field) const {
    LATHE_CHECK(has(field), ConfigError, "{}: config.json has no '{}'; the model needs it",
                file_.string(), field);
    return integer_of(j_[field], field);
  }
  int64_t integer_of(const json& v, const std::string& field) const {
    LATHE_CHECK(v.is_number_integer(), ConfigError, "{}: '{}' is {}, expected an integer",
                file_.string(), field, v.dump());
    return v.get<int64_t>();
  }
  double real_of(const json& v, const std::string& field) const {
    LATHE_CHECK(v.is_number(), ConfigError, "{}: '{}' is {}, expected a number", file_.string(),
                field, v.dump());
    return v.get<double>();
  }
  bool boolean(const std::string& field, bool fallback) const {
    if (!has(field)) return fallback;
    LATHE_CHECK(j_[field].is_boolean(), ConfigError, "{}: '{}' is {}, expected true or false",
                file_.string(), field, j_[field].dump());
    return j_[field].get<bool>();
  }
  std::string text(const std::string& field, const std::string& fallback) const {
    if (!has(field)) return fallback;
    LATHE_CHECK(j_[field].is_string(), ConfigError, "{}: '{}' is {}, expected a string",
                file_.string(), field, j_[field].dump());
    return j_[field].get<std::string>();
  }

  void put(const std::string& key, int64_t v, const std::string& field) {
    out_.push_back({key, std::to_string(v), Kind::integer, field});
  }
  void put_real(const std::string& key, double v, const std::string& field) {
    out_.push_back({key, fmt::format("{}", v), Kind::real, field});
  }
  void put_bool(const std::string& key, bool v, const std::string& field) {
    out_.push_back({key, v ? "true" : "false", Kind::boolean, field});
  }
  void put_text(const std::string& key, const std::string& v, const std::string& field) {
    out_.push_back({key, v, Kind::text, field});
  }
  /// The integer field under the same name, required.
  void same(const std::string& field) { put(field, integer(field), field); }
  /// A number field under the same name, or `fallback` (the config class's default) when absent.
  void same_real(const std::string& field, double fallback) {
    put_real(field, has(field) ? real_of(j_[field], field) : fallback, field);
  }
  /// The activation the family's zoo model computes: another is an error.
  void activation(const std::string& field, const std::vector<std::string>& allowed) const {
    if (!has(field)) return;
    const std::string act = text(field, "");
    LATHE_CHECK(std::find(allowed.begin(), allowed.end(), act) != allowed.end(), ConfigError,
                "{}: {} = '{}', but lathe's model computes {}", file_.string(), field, act,
                fmt::join(allowed, " / "));
  }
  const std::filesystem::path& file() const { return file_; }

 private:
  const json& j_;
  const std::filesystem::path& file_;
  std::vector<HfOption>& out_;
};

/// transformers 4.x's rope_theta + rope_scaling, or transformers 5's rope_parameters.
void read_rope(Reader& r) {
  const bool v5 = r.has("rope_parameters");
  const std::string where = v5 ? "rope_parameters" : "rope_scaling";
  json params = v5 ? r.at("rope_parameters")
                   : (r.has("rope_scaling") ? r.at("rope_scaling") : json::object());
  LATHE_CHECK(params.is_object(), ConfigError, "{}: '{}' is {}, expected an object",
              r.file().string(), where, params.dump());
  const auto field = [&](const std::string& name) { return where + "." + name; };
  double theta = 10000.0;
  if (v5 && params.contains("rope_theta"))
    theta = r.real_of(params["rope_theta"], field("rope_theta"));
  else if (r.has("rope_theta"))
    theta = r.real_of(r.at("rope_theta"), "rope_theta");
  r.put_real("rope_theta", theta, v5 ? field("rope_theta") : "rope_theta");
  std::string type = "default";
  for (const char* name : {"rope_type", "type"})
    if (params.contains(name) && params[name].is_string()) type = params[name].get<std::string>();
  if (params.contains("partial_rotary_factor"))
    LATHE_CHECK(r.real_of(params["partial_rotary_factor"], field("partial_rotary_factor")) == 1.0,
                ConfigError, "{}: {} = {}: lathe rotates whole heads (1.0)", r.file().string(),
                field("partial_rotary_factor"), params["partial_rotary_factor"].dump());
  const auto number = [&](const std::string& name) {
    LATHE_CHECK(params.contains(name), ConfigError, "{}: {} rope scaling needs '{}'",
                r.file().string(), type, field(name));
    return r.real_of(params[name], field(name));
  };
  if (type == "default") {
    r.put_text("rope_scaling", "none", field("rope_type"));
  } else if (type == "linear") {
    r.put_text("rope_scaling", "linear", field("rope_type"));
    r.put_real("rope_factor", number("factor"), field("factor"));
  } else if (type == "llama3") {
    r.put_text("rope_scaling", "llama3", field("rope_type"));
    r.put_real("rope_factor", number("factor"), field("factor"));
    r.put_real("rope_low_freq_factor", number("low_freq_factor"), field("low_freq_factor"));
    r.put_real("rope_high_freq_factor", number("high_freq_factor"), field("high_freq_factor"));
    LATHE_CHECK(params.contains("original_max_position_embeddings"), ConfigError,
                "{}: llama3 rope scaling needs '{}'", r.file().string(),
                field("original_max_position_embeddings"));
    r.put("rope_original_max_position_embeddings",
          r.integer_of(params["original_max_position_embeddings"],
                       field("original_max_position_embeddings")),
          field("original_max_position_embeddings"));
  } else {
    throw ConfigError(
        fmt::format("{}: {}.rope_type = '{}': lathe's llama has default, linear and "
                    "llama3 rotary embeddings",
                    r.file().string(), where, type));
  }
}

/// LlamaConfig / Qwen2Config / MistralConfig → the zoo's llama.
void read_llama_family(Reader& r, const std::string& family) {
  for (const char* f : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads"})
    r.same(f);
  const int64_t heads = r.integer("num_attention_heads");
  r.put("num_key_value_heads",
        r.has("num_key_value_heads") ? r.integer("num_key_value_heads") : heads,
        "num_key_value_heads");
  r.put("head_dim", r.has("head_dim") ? r.integer("head_dim") : r.integer("hidden_size") / heads,
        "head_dim");
  if (r.has("max_position_embeddings")) r.same("max_position_embeddings");
  r.same_real("rms_norm_eps", 1e-6);
  r.activation("hidden_act", {"silu"});
  read_rope(r);
  r.put_bool("tie_word_embeddings", r.boolean("tie_word_embeddings", false), "tie_word_embeddings");
  if (r.has("pad_token_id")) {
    const int64_t pad = r.integer("pad_token_id");
    if (pad >= 0 && pad < r.integer("vocab_size")) r.put("pad_token_id", pad, "pad_token_id");
  }
  if (family == "llama") {
    r.put_bool("attention_bias", r.boolean("attention_bias", false), "attention_bias");
    r.put_bool("mlp_bias", r.boolean("mlp_bias", false), "mlp_bias");
    return;
  }
  const int64_t layers = r.integer("num_hidden_layers");
  if (family == "mistral") {
    r.put("sliding_window", r.has("sliding_window") ? r.integer("sliding_window") : 0,
          "sliding_window");
    r.put("max_window_layers", 0, "sliding_window");
    return;
  }
  // qwen2: biases on q, k and v; a window only with use_sliding_window, on the layers
  // layer_types marks (else those from max_window_layers on).
  r.put_bool("qkv_bias", true, "architectures");
  const bool windowed = r.boolean("use_sliding_window", false) && r.has("sliding_window");
  int64_t first = layers;
  if (windowed && r.has("layer_types")) {
    const json& types = r.at("layer_types");
    LATHE_CHECK(types.is_array() && static_cast<int64_t>(types.size()) == layers, ConfigError,
                "{}: layer_types must list num_hidden_layers ({}) entries", r.file().string(),
                layers);
    for (int64_t i = layers - 1; i >= 0 && types[i] == "sliding_attention"; --i) first = i;
    for (int64_t i = 0; i < first; ++i)
      LATHE_CHECK(types[i] == "full_attention", ConfigError,
                  "{}: layer_types[{}] = {}: lathe's llama slides the window over the last "
                  "layers only (full_attention before sliding_attention)",
                  r.file().string(), i, types[i].dump());
  } else if (windowed) {
    first = r.has("max_window_layers") ? r.integer("max_window_layers") : 28;
  }
  const bool any = windowed && first < layers;
  r.put("sliding_window", any ? r.integer("sliding_window") : 0, "sliding_window");
  r.put("max_window_layers", any ? first : 0, any ? "layer_types" : "use_sliding_window");
}

void read_gpt2(Reader& r, const std::string&) {
  for (const char* f : {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head"}) r.same(f);
  r.put("n_inner", r.has("n_inner") ? r.integer("n_inner") : 0, "n_inner");
  r.same_real("layer_norm_epsilon", 1e-5);
  r.activation("activation_function", {"gelu_new"});
  r.put_bool("tie_word_embeddings", r.boolean("tie_word_embeddings", true), "tie_word_embeddings");
}

void read_bert(Reader& r, const std::string&) {
  for (const char* f : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                        "intermediate_size", "max_position_embeddings"})
    r.same(f);
  if (r.has("type_vocab_size")) r.same("type_vocab_size");
  r.same_real("layer_norm_eps", 1e-12);
  if (r.has("pad_token_id")) r.same("pad_token_id");
  r.activation("hidden_act", {"gelu"});
  r.activation("position_embedding_type", {"absolute"});
}

/// One architecture: its config.json name, the zoo model and how its fields are read.
struct Architecture {
  std::string name;
  std::string model;
  std::string family;  ///< passed to read
  std::function<void(Reader&, const std::string&)> read;
};

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> table = {
      {"LlamaForCausalLM", "llama", "llama", read_llama_family},
      {"Qwen2ForCausalLM", "llama", "qwen2", read_llama_family},
      {"MistralForCausalLM", "llama", "mistral", read_llama_family},
      {"GPT2LMHeadModel", "gpt2", "gpt2", read_gpt2},
      {"BertModel", "bert", "bert", read_bert},
      {"BertForSequenceClassification", "bert_classifier", "bert", read_bert},
  };
  return table;
}

bool same_value(const HfOption& o, const std::string& given, const std::string& where) {
  switch (o.kind) {
    case Kind::integer:
      return config::parse_int(given, where, "model." + o.key) == std::stoll(o.value);
    case Kind::real: {
      const double a = config::parse_double(given, where, "model." + o.key), b = std::stod(o.value);
      return std::abs(a - b) <= 1e-12 * std::max(std::abs(a), std::abs(b));
    }
    case Kind::boolean:
      return config::parse_bool(given, where, "model." + o.key) == (o.value == "true");
    case Kind::text:
      return given == o.value;
  }
  return false;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> hf_architectures() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& a : architectures()) out.emplace_back(a.name, a.model);
  return out;
}

bool is_hf_folder(const std::filesystem::path& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec) &&
         std::filesystem::is_regular_file(path / "config.json", ec);
}

HfModelConfig read_hf_config(const std::filesystem::path& folder) {
  HfModelConfig out;
  out.file = folder / "config.json";
  std::ifstream in(out.file, std::ios::binary);
  LATHE_CHECK(in.good(), ConfigError,
              "{}: cannot read it; a Hugging Face folder holds config.json next to its weights",
              out.file.string());
  const json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  LATHE_CHECK(j.is_object(), ConfigError, "{}: not a JSON object (the file is damaged)",
              out.file.string());
  std::vector<std::string> known;
  for (const auto& a : architectures()) known.push_back(a.name);
  LATHE_CHECK(j.contains("architectures") && j["architectures"].is_array() &&
                  !j["architectures"].empty() && j["architectures"][0].is_string(),
              ConfigError, "{}: no 'architectures' list; lathe reads {}", out.file.string(),
              fmt::join(known, ", "));
  out.architecture = j["architectures"][0].get<std::string>();
  const Architecture* arch = nullptr;
  for (const auto& a : architectures())
    if (a.name == out.architecture) arch = &a;
  LATHE_CHECK(arch != nullptr, ConfigError, "{}: architecture {} is not one lathe has; it reads {}",
              out.file.string(), out.architecture, fmt::join(known, ", "));
  out.model = arch->model;
  Reader reader(j, out.file, out.options);
  arch->read(reader, arch->family);
  return out;
}

std::vector<std::string> apply_hf_config(config::ModelSection& model) {
  if (model.pretrained.empty() || !is_hf_folder(model.pretrained)) return {};
  const HfModelConfig hf = read_hf_config(model.pretrained);
  LATHE_CHECK(model.name == hf.model, ConfigError,
              "{}: model.name = {}, but {} describes a {} (lathe's {}); make model.name {}",
              model.name_where, model.name, hf.file.string(), hf.architecture, hf.model, hf.model);
  std::vector<std::string> lines;
  for (const HfOption& o : hf.options) {
    const auto& values = model.params.values();
    const auto it = values.find(o.key);
    const bool given =
        it != values.end() && !(it->second.items.size() == 1 && it->second.items.front() == "auto");
    if (given) {
      const config::ParamValue& v = it->second;
      const std::string stated = v.items.empty() ? "" : v.items.front();
      LATHE_CHECK(!v.is_list && v.items.size() == 1 && same_value(o, stated, v.where), ConfigError,
                  "{}: model.{} = {}, but {} has {} = {}; remove the key (config.json describes "
                  "the model) or make it {}",
                  v.where, o.key, stated, hf.file.string(), o.field, o.value, o.value);
      lines.push_back(fmt::format("{} = {} (given, agrees with config.json)", o.key, o.value));
      continue;
    }
    model.params.set(o.key, config::ParamValue{{o.value}, false, hf.file.string()});
    lines.push_back(fmt::format("{} = {} (from config.json: {})", o.key, o.value, o.field));
  }
  return lines;
}

namespace {

using ordered = nlohmann::ordered_json;

void write_llama(const LlamaOptions& o, ordered& j) {
  const bool qwen2 = o.qkv_bias() && !o.attention_bias() && !o.mlp_bias();
  const bool mistral = !o.qkv_bias() && !o.attention_bias() && !o.mlp_bias() &&
                       o.sliding_window() > 0 && o.max_window_layers() == 0;
  if (!j.contains("architectures")) {
    LATHE_CHECK(qwen2 || mistral || (o.sliding_window() == 0 && !o.qkv_bias()), ExportError,
                "llama with qkv_bias {}, attention_bias {}, mlp_bias {}, sliding_window {} and "
                "max_window_layers {}: no Hugging Face architecture has these together "
                "(Qwen2: qkv_bias only; Mistral: a window on every layer, no biases; Llama: no "
                "window)",
                o.qkv_bias(), o.attention_bias(), o.mlp_bias(), o.sliding_window(),
                o.max_window_layers());
    const std::string arch = qwen2     ? "Qwen2ForCausalLM"
                             : mistral ? "MistralForCausalLM"
                                       : "LlamaForCausalLM";
    j["architectures"] = ordered::array({arch});
    j["model_type"] = qwen2 ? "qwen2" : mistral ? "mistral" : "llama";
  }
  const std::string type = j.value("model_type", "llama");
  j["vocab_size"] = o.vocab_size();
  j["hidden_size"] = o.hidden_size();
  j["intermediate_size"] = o.intermediate_size();
  j["num_hidden_layers"] = o.num_hidden_layers();
  j["num_attention_heads"] = o.num_attention_heads();
  j["num_key_value_heads"] = o.kv_heads();
  j["head_dim"] = o.head_size();
  j["max_position_embeddings"] = o.max_position_embeddings();
  j["rms_norm_eps"] = o.rms_norm_eps();
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = o.tie_word_embeddings();
  j["attention_dropout"] = o.attention_dropout();
  j["initializer_range"] = o.initializer_range();
  j["pad_token_id"] = o.pad_token_id() >= 0 ? ordered(o.pad_token_id()) : ordered(nullptr);
  ordered rope = ordered::object();
  if (o.rope_scaling() == "linear") {
    rope = {{"rope_type", "linear"}, {"factor", o.rope_factor()}};
  } else if (o.rope_scaling() == "llama3") {
    rope = {{"rope_type", "llama3"},
            {"factor", o.rope_factor()},
            {"low_freq_factor", o.rope_low_freq_factor()},
            {"high_freq_factor", o.rope_high_freq_factor()},
            {"original_max_position_embeddings", o.rope_original_max_position_embeddings()}};
  }
  if (j.contains("rope_parameters")) {  // transformers 5's form, as the base wrote it
    if (rope.empty()) rope["rope_type"] = "default";
    rope["rope_theta"] = o.rope_theta();
    j["rope_parameters"] = rope;
  } else {  // transformers 4.x's form, which 5 reads too
    j["rope_theta"] = o.rope_theta();
    j["rope_scaling"] = rope.empty() ? ordered(nullptr) : rope;
  }
  if (type == "llama") {
    j["attention_bias"] = o.attention_bias();
    j["mlp_bias"] = o.mlp_bias();
  } else if (type == "mistral") {
    j["sliding_window"] = o.sliding_window() > 0 ? ordered(o.sliding_window()) : ordered(nullptr);
  } else if (type == "qwen2") {
    const bool windowed = o.sliding_window() > 0;
    j["use_sliding_window"] = windowed;
    j["sliding_window"] = windowed ? ordered(o.sliding_window()) : ordered(nullptr);
    j["max_window_layers"] = windowed ? o.max_window_layers() : o.num_hidden_layers();
    ordered types = ordered::array();
    for (int64_t i = 0; i < o.num_hidden_layers(); ++i)
      types.push_back(windowed && i >= o.max_window_layers() ? "sliding_attention"
                                                             : "full_attention");
    j["layer_types"] = types;
  }
}

void write_gpt2(const GPT2Options& o, ordered& j) {
  if (!j.contains("architectures")) {
    j["architectures"] = ordered::array({"GPT2LMHeadModel"});
    j["model_type"] = "gpt2";
  }
  j["vocab_size"] = o.vocab_size();
  j["n_positions"] = o.n_positions();
  j["n_embd"] = o.n_embd();
  j["n_layer"] = o.n_layer();
  j["n_head"] = o.n_head();
  j["n_inner"] = o.n_inner() > 0 ? ordered(o.n_inner()) : ordered(nullptr);
  j["layer_norm_epsilon"] = o.layer_norm_epsilon();
  j["activation_function"] = "gelu_new";
  j["tie_word_embeddings"] = o.tie_word_embeddings();
  for (const char* p : {"resid_pdrop", "embd_pdrop", "attn_pdrop"}) j[p] = o.dropout();
}

}  // namespace

std::string hf_config_json(const torch::nn::Module& model, const std::filesystem::path& base) {
  ordered j = ordered::object();
  if (!base.empty()) {
    std::ifstream in(base, std::ios::binary);
    j = ordered::parse(in, nullptr, /*allow_exceptions=*/false);
    LATHE_CHECK(j.is_object(), ExportError, "{}: not a JSON object (the file is damaged)",
                base.string());
  }
  if (const auto* l = dynamic_cast<const LlamaImpl*>(&model)) {
    write_llama(l->options, j);
  } else if (const auto* g = dynamic_cast<const GPT2Impl*>(&model)) {
    write_gpt2(g->options, j);
  } else {
    throw ExportError(
        fmt::format("a Hugging Face folder is written for the zoo's llama and gpt2, not for '{}'",
                    model.name()));
  }
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

}  // namespace lathe::models
