// GPT-2: Conv1D, decoder blocks, Hugging Face's initialisation and the forward pass.
#include "models/transformer/gpt2.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>
#include <memory>
#include <ostream>

#include "lathe/core/error.h"
#include "lathe/core/profile_scope.h"
#include "models/checkpoint.h"
#include "models/kernels.h"
#include "models/transformer/attention.h"

namespace lathe::models {
namespace nn = torch::nn;

Conv1DImpl::Conv1DImpl(int64_t in, int64_t out)
    : weight(register_parameter("weight", at::empty({in, out}))),
      bias(register_parameter("bias", at::zeros({out}))) {
  nn::init::normal_(weight, 0.0, 0.02);
}

at::Tensor Conv1DImpl::forward(const at::Tensor& x) {
  if (x.dim() == 2) return add_adapter(at::addmm(bias, x, weight), x, is_training());  // (N, out)
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = weight.size(1);
  const at::Tensor y = at::addmm(bias, x.reshape({-1, x.size(-1)}), weight).view(shape);
  return add_adapter(y, x, is_training());  // (..., out)
}

void Conv1DImpl::pretty_print(std::ostream& stream) const {
  stream << "lathe::models::Conv1D(in=" << weight.size(0) << ", out=" << weight.size(1) << ")";
}

GPT2BlockImpl::GPT2BlockImpl(const GPT2Options& o) : options(o) {
  const int64_t C = o.n_embd(), inner = o.n_inner() > 0 ? o.n_inner() : 4 * o.n_embd();
  const auto norm = [&] {
    return nn::LayerNorm(nn::LayerNormOptions({C}).eps(o.layer_norm_epsilon()));
  };
  ln_1 = register_module("ln_1", norm());
  auto attn = group(*this, "attn");
  c_attn = attn->register_module("c_attn", Conv1D(C, 3 * C));
  attn_c_proj = attn->register_module("c_proj", Conv1D(C, C));
  ln_2 = register_module("ln_2", norm());
  auto mlp = group(*this, "mlp");
  c_fc = mlp->register_module("c_fc", Conv1D(C, inner));
  mlp_c_proj = mlp->register_module("c_proj", Conv1D(inner, C));
  // Hugging Face scales the residual projections by 1/sqrt(2 · n_layer) at initialisation.
  const double std = 0.02 / std::sqrt(2.0 * static_cast<double>(o.n_layer()));
  nn::init::normal_(attn_c_proj->weight, 0.0, std);
  nn::init::normal_(mlp_c_proj->weight, 0.0, std);
}

at::Tensor GPT2BlockImpl::forward(const at::Tensor& x, const at::Tensor& attention_mask) {
  const double p = options.dropout();
  at::Tensor h;  // (B, T, C)
  {
    const ProfileScope scope("attn");
    const std::vector<at::Tensor> qkv = c_attn(ln_1(x)).chunk(3, -1);  // 3 × (B, T, C)
    at::Tensor a = attend(qkv[0], qkv[1], qkv[2], options.n_head(), attention_mask,
                          /*causal=*/true, p, is_training());
    h = x + at::dropout(attn_c_proj(a), p, is_training());  // (B, T, C)
  }
  const ProfileScope scope("mlp");
  const at::Tensor m = mlp_c_proj(gelu_tanh(c_fc(ln_2(h))));  // gelu_new
  return h + at::dropout(m, p, is_training());
}

at::Tensor GPT2BlockImpl::forward_cached(const at::Tensor& x, at::Tensor& keys,
                                         at::Tensor& values) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), H = options.n_head();
  const auto heads = [&](const at::Tensor& t) {  // (B, T, C) → (B, H, T, C/H)
    return t.reshape({B, T, H, C / H}).transpose(1, 2);
  };
  const std::vector<at::Tensor> qkv = c_attn(ln_1(x)).chunk(3, -1);  // 3 × (B, T, C)
  const at::Tensor q = heads(qkv[0]);
  keys = keys.defined() ? at::cat({keys, heads(qkv[1])}, 2) : heads(qkv[1]).contiguous();
  values = values.defined() ? at::cat({values, heads(qkv[2])}, 2) : heads(qkv[2]).contiguous();
  const int64_t S = keys.size(2);  // past + T
  at::Tensor y;                    // (B, H, T, C/H)
  if (T == 1) {                    // the newest token sees every position
    y = at::scaled_dot_product_attention(q, keys, values);
  } else if (S == T) {  // no past: plain causal attention, as forward()
    y = at::scaled_dot_product_attention(q, keys, values, {}, 0.0, /*is_causal=*/true);
  } else {  // query t (position S - T + t) sees positions ≤ S - T + t
    const at::Tensor allowed = at::ones({T, S}, x.options().dtype(at::kBool)).tril(S - T);
    y = at::scaled_dot_product_attention(q, keys, values, allowed);
  }
  const at::Tensor h = x + attn_c_proj(y.transpose(1, 2).reshape({B, T, C}));  // (B, T, C)
  return h + mlp_c_proj(gelu_tanh(c_fc(ln_2(h))));
}

GPT2Impl::GPT2Impl(const GPT2Options& options_) : options(options_) { reset(); }

void GPT2Impl::reset() {
  const auto& o = options;
  LATHE_CHECK(o.vocab_size() > 0 && o.n_positions() > 0 && o.n_embd() > 0 && o.n_layer() > 0 &&
                  o.n_head() > 0,
              ModelError,
              "gpt2: vocab_size ({}), n_positions ({}), n_embd ({}), n_layer ({}) and n_head ({}) "
              "must be positive",
              o.vocab_size(), o.n_positions(), o.n_embd(), o.n_layer(), o.n_head());
  LATHE_CHECK(o.n_embd() % o.n_head() == 0, ModelError,
              "gpt2: n_embd {} is not divisible by n_head {}", o.n_embd(), o.n_head());
  LATHE_CHECK(o.dropout() >= 0 && o.dropout() < 1, ModelError, "gpt2: dropout {} must be in [0, 1)",
              o.dropout());
  auto transformer = group(*this, "transformer");
  wte = transformer->register_module("wte", nn::Embedding(o.vocab_size(), o.n_embd()));
  wpe = transformer->register_module("wpe", nn::Embedding(o.n_positions(), o.n_embd()));
  h = transformer->register_module("h", nn::ModuleList());
  block_names_.clear();
  for (int64_t i = 0; i < o.n_layer(); ++i) {
    h->push_back(GPT2Block(o));
    block_names_.push_back(fmt::format("h.{}", i));  // the profiler's name, made once
  }
  ln_f = transformer->register_module(
      "ln_f", nn::LayerNorm(nn::LayerNormOptions({o.n_embd()}).eps(o.layer_norm_epsilon())));
  nn::init::normal_(wte->weight, 0.0, 0.02);
  nn::init::normal_(wpe->weight, 0.0, 0.02);
  if (!o.tie_word_embeddings()) {
    lm_head = register_module(
        "lm_head", Linear(LinearOptions(o.n_embd(), o.vocab_size()).bias(false)));
    nn::init::normal_(lm_head->weight, 0.0, 0.02);
  }
}

at::Tensor GPT2Impl::forward_hidden(const at::Tensor& ids, const at::Tensor& attention_mask) {
  LATHE_CHECK(ids.dim() == 2 && !at::isFloatingType(ids.scalar_type()), ModelError,
              "gpt2: expected token ids (B, T) of an integer type, got {} {}",
              c10::toString(ids.scalar_type()), ids.sizes());
  const int64_t T = ids.size(1);
  LATHE_CHECK(T <= options.n_positions(), ModelError,
              "gpt2: sequence of {} tokens is longer than n_positions {}", T,
              options.n_positions());
  at::Tensor x;  // (B, T, C)
  {
    const ProfileScope scope("embeddings");
    const at::Tensor pos = at::arange(T, ids.options().dtype(at::kLong));  // (T,)
    x = at::dropout(wte(ids) + wpe(pos), options.dropout(), is_training());
  }
  const bool recompute = options.gradient_checkpointing() && is_training();
  for (size_t i = 0; i < h->size(); ++i) {
    const ProfileScope scope(block_names_[i]);
    GPT2BlockImpl* b = h[i]->as<GPT2Block>();
    if (recompute)
      x = checkpointed(
          [b, attention_mask](const at::Tensor& in) { return b->forward(in, attention_mask); }, x);
    else
      x = b->forward(x, attention_mask);
  }
  return ln_f(x);  // (B, T, C)
}

std::pair<at::Tensor, GPT2Cache> GPT2Impl::forward_cached(const at::Tensor& ids, GPT2Cache past) {
  LATHE_CHECK(ids.dim() == 2 && !at::isFloatingType(ids.scalar_type()), ModelError,
              "gpt2: expected token ids (B, T) of an integer type, got {} {}",
              c10::toString(ids.scalar_type()), ids.sizes());
  const int64_t S = past.length(), T = ids.size(1);
  LATHE_CHECK(S + T <= options.n_positions(), ModelError,
              "gpt2: {} cached and {} new tokens are more than n_positions {}", S, T,
              options.n_positions());
  if (past.keys.empty()) {
    past.keys.resize(h->size());
    past.values.resize(h->size());
  }
  const at::Tensor pos = at::arange(S, S + T, ids.options().dtype(at::kLong));  // (T,)
  at::Tensor x = wte(ids) + wpe(pos);                                           // (B, T, C)
  for (size_t i = 0; i < h->size(); ++i)
    x = h[i]->as<GPT2Block>()->forward_cached(x, past.keys[i], past.values[i]);
  x = ln_f(x);
  at::Tensor logits = lm_head ? lm_head(x) : at::linear(x, wte->weight);  // (B, T, vocab_size)
  return {std::move(logits), std::move(past)};
}

at::Tensor GPT2Impl::forward(const at::Tensor& ids, const at::Tensor& attention_mask) {
  const at::Tensor x = forward_hidden(ids, attention_mask);  // (B, T, C)
  const ProfileScope scope("lm_head");
  return lm_head ? lm_head(x) : at::linear(x, wte->weight);  // (B, T, vocab_size)
}

}  // namespace lathe::models
