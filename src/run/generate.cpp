// generate: Hugging Face's sampling order over a language model stepped with its cache or state.
#include "lathe/run/generate.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/grad_mode.h>

#include "lathe/config/config.h"
#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/gpu.h"
#include "lathe/core/runtime.h"
#include "lathe/data/tokenizer.h"
#include "src/run/finished_run.h"
#include "models/rnn/rnn.h"
#include "models/transformer/gpt2.h"
#include "models/transformer/llama.h"

namespace lathe::run {
namespace {

namespace fs = std::filesystem;

/// A language model read forward: each call takes the next ids (1, T) and returns their logits
/// (1, T, V), remembering what it has seen.
using Stepper = std::function<at::Tensor(const at::Tensor&)>;

Stepper make_stepper(torch::nn::AnyModule& model, bool use_cache) {
  if (use_cache) {
    if (auto* gpt2 = dynamic_cast<models::GPT2Impl*>(model.ptr().get())) {
      auto cache = std::make_shared<models::GPT2Cache>();
      return [gpt2, cache](const at::Tensor& ids) {
        auto [logits, next] = gpt2->forward_cached(ids, std::move(*cache));
        *cache = std::move(next);
        return logits;
      };
    }
    if (auto* llama = dynamic_cast<models::LlamaImpl*>(model.ptr().get())) {
      auto cache = std::make_shared<models::LlamaCache>();
      return [llama, cache](const at::Tensor& ids) {
        auto [logits, next] = llama->forward_cached(ids, std::move(*cache));
        *cache = std::move(next);
        return logits;
      };
    }
    if (auto* rnn = dynamic_cast<models::RNNLanguageModelImpl*>(model.ptr().get())) {
      auto state = std::make_shared<models::RNNState>();
      return [rnn, state](const at::Tensor& ids) { return rnn->forward_step(ids, *state); };
    }
  }
  // Any other model (or no cache): the whole sequence again, each step.
  auto seen = std::make_shared<at::Tensor>();
  return [&model, seen](const at::Tensor& ids) {
    *seen = seen->defined() ? at::cat({*seen, ids}, 1) : ids;  // (1, S)
    return model.forward<at::Tensor>(*seen).narrow(1, seen->size(1) - ids.size(1), ids.size(1));
  };
}

/// The ids generation stops at: generation_config.json's eos_token_id (an id or a list) in the
/// tokenizer's folder, else the tokenizer's eos, else none.
std::vector<int64_t> stop_ids_of(const fs::path& tokenizer, const data::Tokenizer& tok) {
  const fs::path folder = fs::is_directory(tokenizer) ? tokenizer : tokenizer.parent_path();
  const fs::path file = folder / "generation_config.json";
  std::error_code ec;
  if (fs::exists(file, ec)) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::parse_error& e) {
      throw DataError(fmt::format("{}: not valid JSON (byte {})", file.string(), e.byte));
    }
    if (j.is_object() && j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
      const nlohmann::json& v = j["eos_token_id"];
      std::vector<int64_t> ids;
      for (const auto& x : v.is_array() ? v : nlohmann::json::array({v})) {
        LATHE_CHECK(x.is_number_integer(), DataError,
                    "{}: eos_token_id: expected an id or a list of ids, got {}", file.string(),
                    v.dump());
        ids.push_back(x.get<int64_t>());
      }
      return ids;
    }
  }
  if (tok.special_ids().eos) return {*tok.special_ids().eos};
  return {};
}

}  // namespace

std::vector<int64_t> run_eos_ids(const fs::path& run_dir) {
  const fs::path file = run_dir / "generation_config.json";
  if (!fs::exists(file)) return {};
  std::ifstream in(file, std::ios::binary);
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  LATHE_CHECK(j.is_object(), ConfigError, "{}: not a JSON object (the file is damaged)",
              file.string());
  std::vector<int64_t> ids;
  if (!j.contains("eos_token_id") || j["eos_token_id"].is_null()) return ids;
  const auto& eos = j["eos_token_id"];
  for (const auto& id : eos.is_array() ? eos : nlohmann::json::array({eos})) {
    LATHE_CHECK(id.is_number_integer(), ConfigError,
                "{}: eos_token_id holds {}, expected token ids", file.string(), id.dump());
    ids.push_back(id.get<int64_t>());
  }
  return ids;
}

int64_t next_token(const at::Tensor& logits, const SamplingOptions& o, at::Generator& generator) {
  at::Tensor scores = logits.to(at::kFloat).cpu().reshape({1, -1});  // (1, V)
  if (o.greedy || o.temperature == 0) return scores.argmax(1).item<int64_t>();
  LATHE_CHECK(o.temperature > 0, ConfigError, "--temperature {}: give 0 (greedy) or more",
              o.temperature);
  LATHE_CHECK(o.top_k >= 0, ConfigError, "--top-k {}: give 0 (off) or more", o.top_k);
  LATHE_CHECK(o.top_p > 0 && o.top_p <= 1, ConfigError, "--top-p {}: give a value in (0, 1]",
              o.top_p);
  const float minus_inf = -std::numeric_limits<float>::infinity();
  scores = scores / o.temperature;  // TemperatureLogitsWarper
  if (o.top_k > 0) {                // TopKLogitsWarper: below the k-th largest score → -inf
    const int64_t k = std::min(o.top_k, scores.size(1));
    const at::Tensor kth = std::get<0>(scores.topk(k, 1)).select(1, k - 1).unsqueeze(1);  // (1, 1)
    scores = scores.masked_fill(scores < kth, minus_inf);
  }
  if (o.top_p < 1) {  // TopPLogitsWarper: drop the low tail whose mass is at most 1 - p
    const auto [sorted, order] = scores.sort(1, /*descending=*/false);  // (1, V) ascending
    at::Tensor remove = sorted.softmax(1).cumsum(1) <= (1 - o.top_p);
    remove.select(1, remove.size(1) - 1).fill_(false);  // the most likely token always stays
    scores = scores.masked_fill(remove.scatter(1, order, remove), minus_inf);
  }
  return at::multinomial(scores.softmax(1), 1, false, generator).item<int64_t>();
}

std::vector<int64_t> generate_tokens(torch::nn::AnyModule& model,
                                     const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                                     const SamplingOptions& sampling, c10::Device device,
                                     bool use_cache, const std::vector<int64_t>& stop_ids) {
  LATHE_CHECK(!prompt.empty(), ConfigError,
              "generate: the prompt is empty; give --prompt TEXT or --prompt-ids 1,2,3");
  LATHE_CHECK(max_new_tokens >= 0, ConfigError, "--max-new-tokens {}: give 0 or more",
              max_new_tokens);
  torch::NoGradGuard no_grad;
  auto& module = *model.ptr();
  const bool was_training = module.is_training();
  module.eval();
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(sampling.seed);
  Stepper step = make_stepper(model, use_cache);
  const auto ids_tensor = [&](const std::vector<int64_t>& ids) {
    return at::tensor(ids, at::kLong).unsqueeze(0).to(device);  // (1, T)
  };
  std::vector<int64_t> out;
  at::Tensor logits = step(ids_tensor(prompt));  // (1, T, V)
  for (int64_t i = 0; i < max_new_tokens; ++i) {
    const int64_t token = next_token(logits[0][-1], sampling, generator);
    out.push_back(token);
    if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) break;
    if (i + 1 < max_new_tokens) logits = step(ids_tensor({token}));
  }
  module.train(was_training);
  return out;
}

Generation generate(const fs::path& run_dir, const GenerateOptions& o) {
  const Doing doing(fmt::format("generating with the run {}", run_dir.string()));
  const auto config_file = run_dir / "config.yaml";
  std::vector<std::string> overrides;
  if (!o.device.empty()) overrides.push_back("run.device=" + o.device);
  const config::RunConfig cfg = detail::load_finished_config(run_dir, overrides);
  LATHE_CHECK(cfg.task.kind == "lm", ConfigError,
              "{}: a {} run, not a language model (task lm: gpt2, llama, lstm_lm, gru_lm on "
              "text); answer it with: lathe predict {} INPUT...",
              config_file.string(), cfg.task.kind, run_dir.string());
  const int64_t vocab = cfg.model.params.get_int("vocab_size", 0);
  Generation g;
  std::unique_ptr<data::Tokenizer> tok;
  if (cfg.data.source == "text" && !cfg.data.tokenizer.empty()) {
    tok = data::load_tokenizer(cfg.data.tokenizer);
    g.stop_ids = stop_ids_of(cfg.data.tokenizer, *tok);
  }
  g.byte_level = cfg.data.source == "text" && !tok;
  g.has_text = cfg.data.source == "text";
  LATHE_CHECK(o.prompt.empty() || o.prompt_ids.empty(), ConfigError,
              "give either --prompt or --prompt-ids, not both");
  if (!o.prompt_ids.empty()) {
    g.prompt_ids = o.prompt_ids;
  } else {
    LATHE_CHECK(g.has_text, ConfigError,
                "{}: the run's data ({}) has no text tokenizer lathe applies; give the prompt as "
                "token ids: --prompt-ids 464,3290",
                config_file.string(), cfg.data.source);
    if (tok)
      g.prompt_ids = tok->encode(o.prompt, /*add_special_tokens=*/true, "--prompt");
    else
      for (const unsigned char c : o.prompt) g.prompt_ids.push_back(c);
  }
  for (const int64_t id : g.prompt_ids)
    LATHE_CHECK(id >= 0 && (vocab == 0 || id < vocab), ConfigError,
                "prompt token {} is outside the model's vocabulary of {} ids (0..{})", id, vocab,
                vocab - 1);
  // The context the model has: gpt2's position table, llama's trained context.
  std::string limit_key;
  int64_t limit = 0;
  if (cfg.model.name == "gpt2") {
    limit_key = "n_positions";
    limit = cfg.model.params.get_int(limit_key, 1024);
  } else if (cfg.model.name == "llama") {
    limit_key = "max_position_embeddings";
    limit = cfg.model.params.get_int(limit_key, 2048);
  }
  LATHE_CHECK(limit == 0 || static_cast<int64_t>(g.prompt_ids.size()) + o.max_new_tokens <= limit,
              ConfigError,
              "a prompt of {} tokens and --max-new-tokens {} make {} positions, more than the "
              "model's {} {}; lower --max-new-tokens or shorten the prompt",
              g.prompt_ids.size(), o.max_new_tokens, g.prompt_ids.size() + o.max_new_tokens,
              limit_key, limit);
  // The run's generation_config.json (kept from the Hugging Face folder it was fine-tuned from)
  // says the eos ids; else the tokenizer's, as above.
  if (const auto run_eos = run_eos_ids(run_dir); !run_eos.empty()) g.stop_ids = run_eos;
  if (!o.stop_at_eos) g.stop_ids.clear();

  setup_threads(cfg.run.threads);
  const c10::Device device = select_device(cfg.run.device);
  use_device(device);
  torch::nn::AnyModule model = detail::load_finished_model(cfg, run_dir, o.weights, device);
  const auto t0 = std::chrono::steady_clock::now();
  g.new_ids = generate_tokens(model, g.prompt_ids, o.max_new_tokens, o.sampling, device,
                              o.use_cache, g.stop_ids);
  g.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (g.byte_level)
    for (const auto& part : {g.prompt_ids, g.new_ids})
      for (const int64_t id : part) g.text.push_back(static_cast<char>(id));
  if (tok) {
    std::vector<int64_t> all = g.prompt_ids;
    all.insert(all.end(), g.new_ids.begin(), g.new_ids.end());
    g.text = tok->decode(all, /*skip_special_tokens=*/true);
  }
  return g;
}

}  // namespace lathe::run
