// BERT encoder and sequence classifier with Hugging Face BertModel / BertForSequenceClassification
// names.
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
#include <vector>

#include "models/lora.h"

namespace lathe::models {

/// Options of Bert (Hugging Face BertConfig's names; defaults are bert-base-uncased).
///
///   Bert encoder(BertOptions().hidden_size(384).num_hidden_layers(6).intermediate_size(1536));
struct BertOptions {
  TORCH_ARG(int64_t, vocab_size) = 30522;
  TORCH_ARG(int64_t, hidden_size) = 768;
  TORCH_ARG(int64_t, num_hidden_layers) = 12;
  TORCH_ARG(int64_t, num_attention_heads) = 12;
  TORCH_ARG(int64_t, intermediate_size) = 3072;
  TORCH_ARG(int64_t, max_position_embeddings) = 512;
  TORCH_ARG(int64_t, type_vocab_size) = 2;
  TORCH_ARG(double, layer_norm_eps) = 1e-12;
  TORCH_ARG(double, hidden_dropout_prob) = 0.1;
  TORCH_ARG(double, attention_probs_dropout_prob) = 0.1;
  /// The padding token: when forward gets no attention mask, it attends to ids != pad_token_id.
  TORCH_ARG(int64_t, pad_token_id) = 0;
  TORCH_ARG(bool, add_pooling_layer) = true;  ///< pooler.dense (tanh of the [CLS] state)
  /// Activation checkpointing: keep only each encoder layer's input and recompute it in backward
  /// (less memory for one more forward pass of them; models/checkpoint.h).
  TORCH_ARG(bool, gradient_checkpointing) = false;
};

/// One post-LayerNorm encoder layer: attention.self.{query,key,value}, attention.output.{dense,
/// LayerNorm}, intermediate.dense (erf GELU), output.{dense,LayerNorm}.
class BertLayerImpl : public torch::nn::Module {
 public:
  explicit BertLayerImpl(const BertOptions& options);
  /// (B, T, H), attention_mask (B, T) → (B, T, H)
  at::Tensor forward(const at::Tensor& x, const at::Tensor& attention_mask);

  BertOptions options;
  Linear query{nullptr}, key{nullptr}, value{nullptr}, attention_dense{nullptr};
  torch::nn::LayerNorm attention_norm{nullptr};
  Linear intermediate{nullptr}, output_dense{nullptr};
  torch::nn::LayerNorm output_norm{nullptr};
};
TORCH_MODULE(BertLayer);

/// BertModel: embeddings.{word,position,token_type}_embeddings + embeddings.LayerNorm →
/// encoder.layer.N → [pooler.dense]. Names and shapes equal Hugging Face's, so its checkpoints
/// (e.g. sentence-transformers' all-MiniLM-L6-v2) load unchanged.
class BertImpl : public torch::nn::Module {
 public:
  explicit BertImpl(const BertOptions& options = {});
  /// ids (B, T) int64, optional attention_mask (B, T) (1 = token, 0 = padding; default
  /// ids != pad_token_id) and token_type_ids (B, T) (default 0) → last hidden state (B, T, H)
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& attention_mask = {},
                     const at::Tensor& token_type_ids = {});
  /// pooler.dense + tanh on the first ([CLS]) position of `hidden` (B, T, H) → (B, H)
  at::Tensor pool(const at::Tensor& hidden);
  /// The attention mask forward uses: `attention_mask` when defined, else ids != pad_token_id.
  at::Tensor mask_for(const at::Tensor& ids, const at::Tensor& attention_mask) const;
  void reset();

  BertOptions options;
  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr},
      token_type_embeddings{nullptr};
  torch::nn::LayerNorm embeddings_norm{nullptr};
  torch::nn::ModuleList layer{nullptr};
  Linear pooler{nullptr};  ///< null without add_pooling_layer

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())},
                           {2, torch::nn::AnyValue(at::Tensor())})

 private:
  std::vector<std::string> layer_names_;  ///< "encoder.layer.0", ...: the profiler's names
};
TORCH_MODULE(Bert);

/// Options of BertClassifier: the encoder's and the number of labels.
struct BertClassifierOptions {
  TORCH_ARG(BertOptions, bert) = {};
  TORCH_ARG(int64_t, num_labels) = 2;
  TORCH_ARG(double, classifier_dropout) = -1;  ///< < 0: hidden_dropout_prob, as Hugging Face
};

/// BertForSequenceClassification: `bert` (Bert with pooler) → dropout → `classifier` (Linear).
class BertClassifierImpl : public torch::nn::Module {
 public:
  explicit BertClassifierImpl(const BertClassifierOptions& options = {});
  /// ids (B, T), optional attention_mask and token_type_ids (B, T) → logits (B, num_labels)
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& attention_mask = {},
                     const at::Tensor& token_type_ids = {});
  void reset();

  BertClassifierOptions options;
  Bert bert{nullptr};
  Linear classifier{nullptr};

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())},
                           {2, torch::nn::AnyValue(at::Tensor())})
};
TORCH_MODULE(BertClassifier);

}  // namespace lathe::models
