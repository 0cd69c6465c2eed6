// lathe generate: text (or token ids) sampled from a finished language-model run — gpt2 and llama
// with a key/value cache, lstm_lm / gru_lm carrying their recurrent state — as Hugging Face samples.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/modules/container/any.h>

namespace lathe::run {

/// How the next token is chosen, in Hugging Face generate's order: logits / temperature, then
/// top-k, then top-p (nucleus), then a draw from the softmax. temperature 0 (or `greedy`) is
/// argmax, as do_sample=False.
struct SamplingOptions {
  double temperature = 1.0;  ///< > 0 divides the logits; 0 = greedy
  int64_t top_k = 0;         ///< keep the k most likely tokens (ties at the k-th kept); 0 = off
  double top_p = 1.0;  ///< keep the smallest set whose probability reaches p (at least one); 1 = off
  uint64_t seed = 0;   ///< the draws are a pure function of the seed
  bool greedy = false;
};

/// The next token after `logits` (V) by `o`, drawing from `generator` when sampling.
int64_t next_token(const at::Tensor& logits, const SamplingOptions& o, at::Generator& generator);

/// `max_new_tokens` tokens after `prompt` from a language model (ids (B, T) → logits (B, T, V)):
/// the prompt is read once, then one token per step — through GPT2's key/value cache, through
/// RNNLanguageModel's carried state, or (other models, or `use_cache` false) by running the
/// whole sequence again each step; Llama's key/value cache too. Returns the new tokens only;
/// generation ends early after a token of `stop_ids` (which is kept, as transformers' generate
/// keeps its eos).
///
///   auto ids = lathe::run::generate_tokens(model, {72, 105}, 50, {.greedy = true}, device);
std::vector<int64_t> generate_tokens(torch::nn::AnyModule& model,
                                     const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                                     const SamplingOptions& sampling, c10::Device device,
                                     bool use_cache = true,
                                     const std::vector<int64_t>& stop_ids = {});

/// The end-of-sequence ids of a run: RUN/generation_config.json's eos_token_id (an id or a
/// list; a run fine-tuned from a Hugging Face folder keeps the folder's file), or none.
std::vector<int64_t> run_eos_ids(const std::filesystem::path& run_dir);

/// What `lathe generate` is asked.
struct GenerateOptions {
  std::string prompt;  ///< text, tokenized as the run's data (bytes or data.tokenizer)
  std::vector<int64_t> prompt_ids;  ///< or token ids (any vocabulary)
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  std::filesystem::path weights;  ///< default: RUN/model.safetensors
  std::string device;             ///< empty = the run's run.device
  bool use_cache = true;
  bool stop_at_eos = true;  ///< stop at the eos ids (run_eos_ids, else the tokenizer's)
};

/// What it gave.
struct Generation {
  std::vector<int64_t> prompt_ids, new_ids;
  bool byte_level = false;  ///< the run's vocabulary is bytes: `text` is the prompt + new bytes
  bool has_text = false;    ///< bytes or a tokenizer: `text` is the prompt + new tokens decoded
  std::string text;         ///< (a tokenizer's special tokens left out)
  std::vector<int64_t> stop_ids;  ///< the eos ids generation stops at
  double seconds = 0;  ///< generation time (prompt and new tokens), without loading
};

/// Generates from the language-model run in `run_dir` (task lm: gpt2, llama, lstm_lm,
/// gru_lm). With
/// data.tokenizer the prompt is encoded by it (its special tokens added, as transformers'
/// tokenizer(prompt)), generation stops at generation_config.json's eos_token_id (an id or a
/// list; the file in the tokenizer's folder) or else the tokenizer's eos (RUN/generation_config.json wins), and `text` is decoded
/// without special tokens. A prompt
/// token outside the model's vocabulary, an empty prompt or a sequence longer than gpt2's
/// n_positions is a ConfigError saying what to change.
Generation generate(const std::filesystem::path& run_dir, const GenerateOptions& options);

}  // namespace lathe::run
