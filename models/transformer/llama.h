// The Llama decoder family (Llama, Qwen2, Mistral) with Hugging Face's names and layouts: RMSNorm,
// rotary position embeddings, a SwiGLU MLP and grouped-query attention, with a key/value cache.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "models/lora.h"

namespace lathe::models {

/// Options of Llama (Hugging Face LlamaConfig's names; defaults are LlamaConfig's). Qwen2 is
/// qkv_bias true; Mistral is a sliding_window; both are this model with those options.
///
///   Llama lm(LlamaOptions().vocab_size(96).hidden_size(48).intermediate_size(128)
///                .num_hidden_layers(2).num_attention_heads(4).num_key_value_heads(1));
struct LlamaOptions {
  TORCH_ARG(int64_t, vocab_size) = 32000;
  TORCH_ARG(int64_t, hidden_size) = 4096;
  TORCH_ARG(int64_t, intermediate_size) = 11008;  ///< the SwiGLU MLP's width
  TORCH_ARG(int64_t, num_hidden_layers) = 32;
  TORCH_ARG(int64_t, num_attention_heads) = 32;
  TORCH_ARG(int64_t,
            num_key_value_heads) = 0;  ///< grouped-query attention; 0 = num_attention_heads
  TORCH_ARG(int64_t, head_dim) = 0;    ///< 0 = hidden_size / num_attention_heads
  /// The context the model was trained for; generation stops there. Rotary embeddings have no
  /// table, so forward itself takes longer sequences (as transformers does).
  TORCH_ARG(int64_t, max_position_embeddings) = 2048;
  TORCH_ARG(double, rms_norm_eps) = 1e-6;
  TORCH_ARG(double, rope_theta) = 10000.0;
  /// none | linear (the frequencies divided by rope_factor) | llama3 (Llama 3.1's
  /// per-frequency rescaling by rope_factor, rope_low_freq_factor, rope_high_freq_factor and
  /// rope_original_max_position_embeddings)
  TORCH_ARG(std::string, rope_scaling) = "none";
  TORCH_ARG(double, rope_factor) = 1.0;
  TORCH_ARG(double, rope_low_freq_factor) = 1.0;
  TORCH_ARG(double, rope_high_freq_factor) = 4.0;
  TORCH_ARG(int64_t, rope_original_max_position_embeddings) = 8192;
  TORCH_ARG(bool, attention_bias) = false;  ///< biases on q, k, v and o_proj (Llama's)
  TORCH_ARG(bool, qkv_bias) = false;        ///< biases on q, k and v_proj only (Qwen2)
  TORCH_ARG(bool, mlp_bias) = false;
  /// > 0: a query sees itself and the sliding_window - 1 positions before it (Mistral; Qwen2's
  /// use_sliding_window), in the layers from max_window_layers on.
  TORCH_ARG(int64_t, sliding_window) = 0;
  TORCH_ARG(int64_t, max_window_layers) = 0;
  TORCH_ARG(double, attention_dropout) = 0.0;
  TORCH_ARG(bool, tie_word_embeddings) = false;  ///< lm_head shares model.embed_tokens.weight
  TORCH_ARG(int64_t, pad_token_id) = -1;         ///< the embedding's padding_idx; -1 = none
  TORCH_ARG(double, initializer_range) = 0.02;
  /// Activation checkpointing: keep only each layer's input and recompute the layer in backward.
  TORCH_ARG(bool, gradient_checkpointing) = false;

 public:
  /// The key/value heads and the head size, with 0 resolved.
  int64_t kv_heads() const {
    return num_key_value_heads_ > 0 ? num_key_value_heads_ : num_attention_heads_;
  }
  int64_t head_size() const {
    return head_dim_ > 0 ? head_dim_ : hidden_size_ / num_attention_heads_;
  }
};

/// The rotary embeddings' inverse frequencies (head_size / 2,) float32, as transformers computes
/// them for `o`'s rope_theta and rope_scaling.
at::Tensor rope_inverse_frequencies(const LlamaOptions& o, c10::Device device);

/// Root-mean-square layer norm: weight · x / sqrt(mean(x²) + eps), the statistics in float32 and
/// the result cast back to x's dtype before the weight (transformers' LlamaRMSNorm).
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t size, double eps);
  /// (..., size) → (..., size)
  at::Tensor forward(const at::Tensor& x);
  double eps;
  at::Tensor weight;  ///< [size], ones
};
TORCH_MODULE(RMSNorm);

/// The keys (after the rotation) and values a Llama has computed for the tokens it has read, one
/// pair per layer, each (B, kv_heads, S, head_size). Empty before the first call.
struct LlamaCache {
  std::vector<at::Tensor> keys, values;
  /// S: the tokens read so far.
  int64_t length() const { return keys.empty() ? 0 : keys.front().size(2); }
};

/// The rotation and the attention pattern one forward shares among its layers.
struct LlamaContext {
  at::Tensor cos, sin;      ///< (T, head_size), float32
  at::Tensor mask;          ///< full layers: bool (B or 1, 1, T, S) of allowed keys, or undefined
  at::Tensor sliding_mask;  ///< sliding layers: likewise
  /// Without a mask: whether query t sees keys ≤ t (is_causal: no past) or every key (one new
  /// token after a past).
  bool causal = true;
};

/// Self-attention with grouped-query heads: q_proj, k_proj, v_proj, o_proj (Linear, LoRA hosts).
class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const LlamaOptions& options, bool sliding);
  /// x (B, T, C) → (B, T, C). With `keys` and `values` given (a cache: the past (B, kv_heads, S,
  /// head_size), or undefined tensors for none), the new keys and values are appended to them
  /// and the queries attend over the past too.
  at::Tensor forward(const at::Tensor& x, const LlamaContext& context, at::Tensor* keys = nullptr,
                     at::Tensor* values = nullptr);
  LlamaOptions options;
  bool sliding;
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
};
TORCH_MODULE(LlamaAttention);

/// down_proj(silu(gate_proj(x)) · up_proj(x)).
class LlamaMLPImpl : public torch::nn::Module {
 public:
  explicit LlamaMLPImpl(const LlamaOptions& options);
  /// (B, T, C) → (B, T, C)
  at::Tensor forward(const at::Tensor& x);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

/// x + self_attn(input_layernorm(x)), then x + mlp(post_attention_layernorm(x)).
class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const LlamaOptions& options, bool sliding);
  /// (B, T, C) → (B, T, C); keys / values as LlamaAttention's.
  at::Tensor forward(const at::Tensor& x, const LlamaContext& context, at::Tensor* keys = nullptr,
                     at::Tensor* values = nullptr);
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

/// LlamaForCausalLM (and Qwen2ForCausalLM, MistralForCausalLM): model.embed_tokens →
/// model.layers.N → model.norm → lm_head (tied to embed_tokens unless tie_word_embeddings is
/// false; then no separate parameter, as in save_pretrained's files). State-dict names and
/// shapes equal transformers', so its safetensors load as they are. Attention runs through
/// at::scaled_dot_product_attention with is_causal when nothing else is masked (CUDA's flash
/// kernel) and enable_gqa for grouped key/value heads.
class LlamaImpl : public torch::nn::Module {
 public:
  explicit LlamaImpl(const LlamaOptions& options = {});
  /// ids (B, T) int64, optional attention_mask (B, T) (1 = token, 0 = padding) → logits
  /// (B, T, vocab_size). Positions are 0..T-1.
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& attention_mask = {});
  /// The final hidden states (B, T, hidden_size), after model.norm.
  at::Tensor forward_hidden(const at::Tensor& ids, const at::Tensor& attention_mask = {});
  /// Incremental forward for generation (eval mode): ids (B, T) are the tokens after the S that
  /// `past` holds (positions S..S+T-1); returns their logits (B, T, vocab_size) and the cache
  /// extended by them. The logits equal forward()'s on the whole sequence at those positions.
  ///
  ///   auto [logits, cache] = lm->forward_cached(prompt);                     // (1, P, V)
  ///   std::tie(logits, cache) = lm->forward_cached(next, std::move(cache));  // (1, 1, V)
  std::pair<at::Tensor, LlamaCache> forward_cached(const at::Tensor& ids, LlamaCache past = {});
  /// The logits of hidden states (B, T, hidden_size): lm_head, or the tied embedding.
  at::Tensor head(const at::Tensor& hidden);
  void reset();

  LlamaOptions options;
  torch::nn::Embedding embed_tokens{nullptr};  ///< model.embed_tokens
  torch::nn::ModuleList layers{nullptr};       ///< model.layers
  RMSNorm norm{nullptr};                       ///< model.norm
  Linear lm_head{nullptr};                     ///< null when tied

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})

 private:
  /// The rotation for positions start..start+T-1 and the masks for queries there over keys
  /// 0..start+T-1, with an optional key mask (B, start+T).
  LlamaContext context(int64_t start, int64_t T, const at::Tensor& key_mask,
                       const at::TensorOptions& float_options) const;
  std::vector<std::string> layer_names_;  ///< "layers.0", ...: the profiler's names
  /// rope_inverse_frequencies (head_size / 2,): not a buffer (transformers' is not saved either);
  /// each forward takes it to the input's device.
  at::Tensor inv_freq_;
};
TORCH_MODULE(Llama);

}  // namespace lathe::models
