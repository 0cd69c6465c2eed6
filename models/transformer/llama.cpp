// Llama family: rotary frequencies, RMSNorm, attention with grouped keys/values, the decoder
// layers, masks and the cached forward.
#include "models/transformer/llama.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/init.h>

#include <cmath>
#include <numbers>
#include <optional>

#include "lathe/core/error.h"
#include "lathe/core/profile_scope.h"
#include "models/checkpoint.h"
#include "models/transformer/attention.h"

namespace lathe::models {
namespace nn = torch::nn;

at::Tensor rope_inverse_frequencies(const LlamaOptions& o, c10::Device device) {
  const int64_t D = o.head_size();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  // 1 / theta^(2i / D), the exponent in float32 as transformers computes it
  const at::Tensor exponent =
      at::arange(0, D, 2, f32.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(D);  // (D/2,)
  at::Tensor inv_freq = 1.0 / at::pow(o.rope_theta(), exponent);
  if (o.rope_scaling() == "linear") return inv_freq / o.rope_factor();
  if (o.rope_scaling() == "llama3") {
    const double factor = o.rope_factor(), low = o.rope_low_freq_factor(),
                 high = o.rope_high_freq_factor();
    const double context = static_cast<double>(o.rope_original_max_position_embeddings());
    const double low_freq_wavelen = context / low, high_freq_wavelen = context / high;
    const at::Tensor wavelen = 2 * std::numbers::pi / inv_freq;
    // long wavelengths are divided by the factor, short ones kept, the ones between blended
    const at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq);
    const at::Tensor smooth = (context / wavelen - low) / (high - low);
    const at::Tensor blended = (1.0 - smooth) * scaled / factor + smooth * scaled;
    const at::Tensor medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen);
    return at::where(medium, blended, scaled);
  }
  return inv_freq;
}

RMSNormImpl::RMSNormImpl(int64_t size, double eps_)
    : eps(eps_), weight(register_parameter("weight", at::ones({size}))) {}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());  // (..., size)
}

namespace {

/// (B, heads, T, D): each half-pair rotated by the position's angle (transformers' rotate_half
/// layout: the first half against the second).
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t D = x.size(-1), half = D / 2;
  const at::Tensor rotated = at::cat({-x.slice(-1, half, D), x.slice(-1, 0, half)}, -1);
  return x * cos.to(x.scalar_type()) + rotated * sin.to(x.scalar_type());
}

Linear projection(int64_t in, int64_t out, bool bias) {
  return Linear(LinearOptions(in, out).bias(bias));
}

}  // namespace

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaOptions& o, bool sliding_)
    : options(o), sliding(sliding_) {
  const int64_t C = o.hidden_size(), H = o.num_attention_heads(), KV = o.kv_heads(),
                D = o.head_size();
  const bool qkv = o.attention_bias() || o.qkv_bias();
  q_proj = register_module("q_proj", projection(C, H * D, qkv));
  k_proj = register_module("k_proj", projection(C, KV * D, qkv));
  v_proj = register_module("v_proj", projection(C, KV * D, qkv));
  o_proj = register_module("o_proj", projection(H * D, C, o.attention_bias()));
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x, const LlamaContext& context,
                                       at::Tensor* keys, at::Tensor* values) {
  const int64_t B = x.size(0), T = x.size(1), H = options.num_attention_heads(),
                KV = options.kv_heads(), D = options.head_size();
  const auto heads = [&](const at::Tensor& t, int64_t n) {  // (B, T, n·D) → (B, n, T, D)
    return t.view({B, T, n, D}).transpose(1, 2);
  };
  const at::Tensor q = rotate(heads(q_proj(x), H), context.cos, context.sin);  // (B, H, T, D)
  at::Tensor k = rotate(heads(k_proj(x), KV), context.cos, context.sin);       // (B, KV, T, D)
  at::Tensor v = heads(v_proj(x), KV);                                         // (B, KV, T, D)
  if (keys != nullptr) {  // the cache: attend over the past and the new positions
    k = keys->defined() ? at::cat({*keys, k}, 2) : k.contiguous();  // (B, KV, S, D)
    v = values->defined() ? at::cat({*values, v}, 2) : v.contiguous();
    *keys = k;
    *values = v;
  }
  const at::Tensor& mask = sliding ? context.sliding_mask : context.mask;
  const double p = is_training() ? options.attention_dropout() : 0.0;
  const at::Tensor y = at::scaled_dot_product_attention(
      q, k, v, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt, p,
      !mask.defined() && context.causal, std::nullopt, /*enable_gqa=*/KV != H);  // (B, H, T, D)
  return o_proj(y.transpose(1, 2).reshape({B, T, H * D}));                       // (B, T, C)
}

LlamaMLPImpl::LlamaMLPImpl(const LlamaOptions& o) {
  const int64_t C = o.hidden_size(), I = o.intermediate_size();
  gate_proj = register_module("gate_proj", projection(C, I, o.mlp_bias()));
  up_proj = register_module("up_proj", projection(C, I, o.mlp_bias()));
  down_proj = register_module("down_proj", projection(I, C, o.mlp_bias()));
}

at::Tensor LlamaMLPImpl::forward(const at::Tensor& x) {
  return down_proj(at::silu(gate_proj(x)) * up_proj(x));  // (B, T, I) → (B, T, C)
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaOptions& o, bool sliding) {
  self_attn = register_module("self_attn", LlamaAttention(o, sliding));
  mlp = register_module("mlp", LlamaMLP(o));
  input_layernorm = register_module("input_layernorm", RMSNorm(o.hidden_size(), o.rms_norm_eps()));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(o.hidden_size(), o.rms_norm_eps()));
}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& x, const LlamaContext& context,
                                          at::Tensor* keys, at::Tensor* values) {
  at::Tensor h;  // (B, T, C)
  {
    const ProfileScope scope("attn");
    h = x + self_attn->forward(input_layernorm(x), context, keys, values);
  }
  const ProfileScope scope("mlp");
  return h + mlp(post_attention_layernorm(h));
}

LlamaImpl::LlamaImpl(const LlamaOptions& options_) : options(options_) { reset(); }

void LlamaImpl::reset() {
  const auto& o = options;
  LATHE_CHECK(o.vocab_size() > 0 && o.hidden_size() > 0 && o.intermediate_size() > 0 &&
                  o.num_hidden_layers() > 0 && o.num_attention_heads() > 0 &&
                  o.num_key_value_heads() >= 0 && o.head_dim() >= 0,
              ModelError,
              "llama: vocab_size ({}), hidden_size ({}), intermediate_size ({}), "
              "num_hidden_layers ({}) and num_attention_heads ({}) must be positive, "
              "num_key_value_heads ({}) and head_dim ({}) positive or 0 (derived)",
              o.vocab_size(), o.hidden_size(), o.intermediate_size(), o.num_hidden_layers(),
              o.num_attention_heads(), o.num_key_value_heads(), o.head_dim());
  LATHE_CHECK(o.num_attention_heads() % o.kv_heads() == 0, ModelError,
              "llama: num_attention_heads {} is not a multiple of num_key_value_heads {}",
              o.num_attention_heads(), o.kv_heads());
  LATHE_CHECK(o.head_dim() > 0 || o.hidden_size() % o.num_attention_heads() == 0, ModelError,
              "llama: hidden_size {} is not divisible by num_attention_heads {}; set model.head_dim",
              o.hidden_size(), o.num_attention_heads());
  LATHE_CHECK(o.head_size() % 2 == 0, ModelError,
              "llama: the head size {} must be even for rotary embeddings", o.head_size());
  LATHE_CHECK(
      o.rope_scaling() == "none" || o.rope_scaling() == "linear" || o.rope_scaling() == "llama3",
      ModelError, "llama: rope_scaling '{}' is not one of none, linear, llama3", o.rope_scaling());
  LATHE_CHECK(o.rope_theta() > 0 && o.rope_factor() > 0 && o.rms_norm_eps() > 0, ModelError,
              "llama: rope_theta ({}), rope_factor ({}) and rms_norm_eps ({}) must be positive",
              o.rope_theta(), o.rope_factor(), o.rms_norm_eps());
  LATHE_CHECK(o.rope_scaling() != "llama3" ||
                  (o.rope_high_freq_factor() > o.rope_low_freq_factor() &&
                   o.rope_low_freq_factor() > 0 && o.rope_original_max_position_embeddings() > 0),
              ModelError,
              "llama: llama3 rope scaling needs 0 < rope_low_freq_factor ({}) < "
              "rope_high_freq_factor ({}) and rope_original_max_position_embeddings ({}) > 0",
              o.rope_low_freq_factor(), o.rope_high_freq_factor(),
              o.rope_original_max_position_embeddings());
  LATHE_CHECK(o.sliding_window() >= 0 && o.max_window_layers() >= 0, ModelError,
              "llama: sliding_window ({}) and max_window_layers ({}) must not be negative",
              o.sliding_window(), o.max_window_layers());
  LATHE_CHECK(o.pad_token_id() < o.vocab_size(), ModelError,
              "llama: pad_token_id {} is outside the vocabulary of {}", o.pad_token_id(),
              o.vocab_size());
  LATHE_CHECK(o.attention_dropout() >= 0 && o.attention_dropout() < 1, ModelError,
              "llama: attention_dropout {} must be in [0, 1)", o.attention_dropout());
  auto model = group(*this, "model");
  auto embedding = nn::EmbeddingOptions(o.vocab_size(), o.hidden_size());
  if (o.pad_token_id() >= 0) embedding.padding_idx(o.pad_token_id());
  embed_tokens = model->register_module("embed_tokens", nn::Embedding(embedding));
  layers = model->register_module("layers", nn::ModuleList());
  layer_names_.clear();
  for (int64_t i = 0; i < o.num_hidden_layers(); ++i) {
    const bool sliding = o.sliding_window() > 0 && i >= o.max_window_layers();
    layers->push_back(LlamaDecoderLayer(o, sliding));
    layer_names_.push_back(fmt::format("layers.{}", i));
  }
  norm = model->register_module("norm", RMSNorm(o.hidden_size(), o.rms_norm_eps()));
  if (!o.tie_word_embeddings())
    lm_head = register_module("lm_head", projection(o.hidden_size(), o.vocab_size(), false));
  // transformers' _init_weights: every Linear and the embedding N(0, initializer_range), biases
  // and the padding row zero, norms one.
  torch::NoGradGuard no_grad;
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    if (name.ends_with("layernorm.weight") || name == "model.norm.weight") continue;
    if (name.ends_with(".bias"))
      item.value().zero_();
    else
      nn::init::normal_(item.value(), 0.0, o.initializer_range());
  }
  if (o.pad_token_id() >= 0) embed_tokens->weight[o.pad_token_id()].zero_();
  inv_freq_ = rope_inverse_frequencies(o, at::kCPU);
}

LlamaContext LlamaImpl::context(int64_t start, int64_t T, const at::Tensor& key_mask,
                                const at::TensorOptions& float_options) const {
  LlamaContext c;
  const at::Device device = float_options.device();
  const int64_t S = start + T;  // keys 0..S-1
  const auto longs = at::TensorOptions(device).dtype(at::kLong);
  {
    const at::Tensor positions = at::arange(start, S, longs).to(at::kFloat);  // (T,)
    const at::Tensor angles =
        positions.unsqueeze(1) * inv_freq_.to(device).unsqueeze(0);  // (T, D/2)
    const at::Tensor both = at::cat({angles, angles}, -1);              // (T, D)
    c.cos = both.cos();
    c.sin = both.sin();
  }
  // Sliding layers always take their band mask (also while it hides nothing), so that a traced
  // forward is right at every length.
  const int64_t W = options.sliding_window();
  const bool past = start > 0;
  c.causal = !past;
  if (!key_mask.defined() && W == 0 && (!past || T == 1)) return c;
  const at::Tensor q = at::arange(start, S, longs).unsqueeze(1);  // (T, 1) query positions
  const at::Tensor k = at::arange(0, S, longs).unsqueeze(0);      // (1, S) key positions
  const auto finish = [&](at::Tensor allowed) {                   // (T, S) → (B|1, 1, T, S)
    allowed = allowed.view({1, 1, T, S});
    if (key_mask.defined()) {
      LATHE_CHECK(key_mask.dim() == 2 && key_mask.size(1) == S, ModelError,
                  "llama: attention_mask must be (B, {}), got {}", S, key_mask.sizes());
      allowed = allowed & key_mask.to(device, at::kBool).view({key_mask.size(0), 1, 1, S});
      // a query left with no key (left padding) attends to itself, so nothing is NaN
      const at::Tensor none = ~allowed.any(-1, /*keepdim=*/true);
      allowed = allowed | (none & (k == q).view({1, 1, T, S}));
    }
    return allowed;
  };
  const at::Tensor causal = k <= q;  // (T, S)
  if (key_mask.defined() || (past && T > 1)) c.mask = finish(causal);
  if (W > 0) c.sliding_mask = finish(causal & (k > q - W));
  return c;
}

at::Tensor LlamaImpl::forward_hidden(const at::Tensor& ids, const at::Tensor& attention_mask) {
  LATHE_CHECK(ids.dim() == 2 && !at::isFloatingType(ids.scalar_type()), ModelError,
              "llama: expected token ids (B, T) of an integer type, got {} {}",
              c10::toString(ids.scalar_type()), ids.sizes());
  at::Tensor x;  // (B, T, C)
  {
    const ProfileScope scope("embeddings");
    x = embed_tokens(ids);
  }
  const LlamaContext c = context(0, ids.size(1), attention_mask, x.options());
  const bool recompute = options.gradient_checkpointing() && is_training();
  for (size_t i = 0; i < layers->size(); ++i) {
    const ProfileScope scope(layer_names_[i]);
    LlamaDecoderLayerImpl* layer = layers[i]->as<LlamaDecoderLayer>();
    if (recompute)
      x = checkpointed([layer, c](const at::Tensor& in) { return layer->forward(in, c); }, x);
    else
      x = layer->forward(x, c);
  }
  return norm(x);  // (B, T, C)
}

at::Tensor LlamaImpl::head(const at::Tensor& hidden) {
  const ProfileScope scope("lm_head");
  return lm_head ? lm_head(hidden) : at::linear(hidden, embed_tokens->weight);  // (B, T, V)
}

at::Tensor LlamaImpl::forward(const at::Tensor& ids, const at::Tensor& attention_mask) {
  return head(forward_hidden(ids, attention_mask));
}

std::pair<at::Tensor, LlamaCache> LlamaImpl::forward_cached(const at::Tensor& ids,
                                                            LlamaCache past) {
  LATHE_CHECK(ids.dim() == 2 && !at::isFloatingType(ids.scalar_type()), ModelError,
              "llama: expected token ids (B, T) of an integer type, got {} {}",
              c10::toString(ids.scalar_type()), ids.sizes());
  const int64_t S = past.length(), T = ids.size(1);
  if (past.keys.empty()) {
    past.keys.resize(layers->size());
    past.values.resize(layers->size());
  }
  at::Tensor x = embed_tokens(ids);  // (B, T, C)
  const LlamaContext c = context(S, T, {}, x.options());
  for (size_t i = 0; i < layers->size(); ++i)
    x = layers[i]->as<LlamaDecoderLayer>()->forward(x, c, &past.keys[i], &past.values[i]);
  at::Tensor logits = head(norm(x));  // (B, T, vocab_size)
  return {std::move(logits), std::move(past)};
}

}  // namespace lathe::models
