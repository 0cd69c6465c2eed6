// GPT-2 decoder language model with Hugging Face GPT2LMHeadModel's names and layouts.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "models/lora.h"

namespace lathe::models {

/// Options of GPT2 (Hugging Face GPT2Config's names; defaults are the 124M "gpt2").
///
///   GPT2 lm(GPT2Options().vocab_size(96).n_positions(256).n_embd(128).n_layer(4).n_head(4));
struct GPT2Options {
  TORCH_ARG(int64_t, vocab_size) = 50257;
  TORCH_ARG(int64_t, n_positions) = 1024;  ///< longest sequence
  TORCH_ARG(int64_t, n_embd) = 768;
  TORCH_ARG(int64_t, n_layer) = 12;
  TORCH_ARG(int64_t, n_head) = 12;
  TORCH_ARG(int64_t, n_inner) = 0;  ///< MLP width; 0 = 4 · n_embd
  TORCH_ARG(double, layer_norm_epsilon) = 1e-5;
  TORCH_ARG(double, dropout) = 0.1;             ///< embd_pdrop = attn_pdrop = resid_pdrop
  TORCH_ARG(bool, tie_word_embeddings) = true;  ///< lm_head shares transformer.wte.weight
  /// Activation checkpointing: keep only each block's input and recompute the block in backward
  /// (less memory for one more forward pass of the blocks).
  TORCH_ARG(bool, gradient_checkpointing) = false;
};

/// Hugging Face's Conv1D: a linear layer whose weight is stored [in, out] (y = x W + b). It can
/// carry a LoRA adapter (models/lora.h; peft's fan_in_fan_out).
class Conv1DImpl : public torch::nn::Module, public LoraHost {
 public:
  Conv1DImpl(int64_t in, int64_t out);
  /// (..., in) → (..., out)
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  at::Tensor& base_weight() override { return weight; }
  bool fan_in_fan_out() const override { return true; }
  at::Tensor weight;  ///< [in, out]
  at::Tensor bias;    ///< [out]
};
TORCH_MODULE(Conv1D);

/// The keys and values a GPT2 has computed for the tokens it has read, one pair per block, each
/// (B, n_head, S, head_dim): what an incremental forward (GPT2Impl::forward_cached) continues
/// from. Empty before the first call.
struct GPT2Cache {
  std::vector<at::Tensor> keys, values;
  /// S: the tokens read so far.
  int64_t length() const { return keys.empty() ? 0 : keys.front().size(2); }
};

/// One pre-LayerNorm decoder block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). Names: ln_1,
/// attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj.
class GPT2BlockImpl : public torch::nn::Module {
 public:
  explicit GPT2BlockImpl(const GPT2Options& options);
  /// (B, T, C), optional attention_mask (B, T) → (B, T, C)
  at::Tensor forward(const at::Tensor& x, const at::Tensor& attention_mask);
  /// Incremental (eval mode, no dropout): x (B, T, C) for the positions after the S whose keys
  /// and values (B, n_head, S, head_dim) are given (undefined for none); each query attends to
  /// every earlier position and itself. `keys` and `values` become (B, n_head, S + T, head_dim).
  at::Tensor forward_cached(const at::Tensor& x, at::Tensor& keys, at::Tensor& values);

  GPT2Options options;
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  Conv1D c_attn{nullptr}, attn_c_proj{nullptr};  ///< attn.c_attn, attn.c_proj
  Conv1D c_fc{nullptr}, mlp_c_proj{nullptr};     ///< mlp.c_fc, mlp.c_proj
};
TORCH_MODULE(GPT2Block);

/// GPT2LMHeadModel: transformer.wte + transformer.wpe → dropout → transformer.h.N →
/// transformer.ln_f → lm_head (tied to wte unless tie_word_embeddings is false). State-dict
/// names and shapes equal Hugging Face's; a tied lm_head.weight is not a separate parameter (as
/// in save_pretrained's files; a torch.save state dict that holds it as an alias of wte loads).
/// The MLP uses gelu_new (the tanh approximation), attention is causal.
class GPT2Impl : public torch::nn::Module {
 public:
  explicit GPT2Impl(const GPT2Options& options = {});
  /// ids (B, T) int64, optional attention_mask (B, T) (1 = token, 0 = padding) → logits
  /// (B, T, vocab_size)
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& attention_mask = {});
  /// Incremental forward for generation (eval mode: no dropout): ids (B, T) are the tokens after
  /// the S that `past` holds (positions S..S+T-1); returns their logits (B, T, vocab_size) and
  /// the cache extended by them. The logits equal forward()'s on the whole sequence at those
  /// positions; the past is never recomputed. S + T beyond n_positions is a ModelError.
  ///
  ///   auto [logits, cache] = lm->forward_cached(prompt);                     // (1, P, V)
  ///   std::tie(logits, cache) = lm->forward_cached(next, std::move(cache));  // (1, 1, V)
  std::pair<at::Tensor, GPT2Cache> forward_cached(const at::Tensor& ids, GPT2Cache past = {});
  /// The final hidden states (B, T, n_embd), after ln_f.
  at::Tensor forward_hidden(const at::Tensor& ids, const at::Tensor& attention_mask = {});
  void reset();

  GPT2Options options;
  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList h{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
  Linear lm_head{nullptr};  ///< null when tied

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})

 private:
  std::vector<std::string> block_names_;  ///< "h.0", "h.1", ...: the blocks' profiler names
};
TORCH_MODULE(GPT2);

}  // namespace lathe::models
