// Recurrent models: LSTM / GRU sequence classifiers and a token-level language model.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/rnn.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

namespace lathe::models {

/// The recurrent core both models share: torch::nn::LSTM or GRU, batch-first, registered as
/// `rnn` so that its parameters are named as torch.nn.LSTM / GRU's (rnn.weight_ih_l0,
/// rnn.weight_hh_l0_reverse, rnn.bias_ih_l1, ...).
struct RecurrentOptions {
  TORCH_ARG(std::string, cell) = "lstm";  ///< lstm | gru
  TORCH_ARG(int64_t, input_size) = 64;
  TORCH_ARG(int64_t, hidden_size) = 128;
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(bool, bidirectional) = false;
  TORCH_ARG(double, dropout) = 0.0;  ///< between stacked layers (torch.nn.LSTM's dropout)
};

/// Options of RNNClassifier.
///
///   RNNClassifier net(RNNClassifierOptions().vocab_size(5000).num_classes(2).cell("gru"));
struct RNNClassifierOptions {
  TORCH_ARG(std::string, cell) = "lstm";  ///< lstm | gru
  /// > 0: the input is token ids (B, T) looked up in an `embedding`; 0: the input is already
  /// features (B, T, input_size).
  TORCH_ARG(int64_t, vocab_size) = 0;
  TORCH_ARG(int64_t, embedding_dim) = 64;  ///< with vocab_size > 0
  TORCH_ARG(int64_t, input_size) = 1;      ///< with vocab_size == 0
  TORCH_ARG(int64_t, hidden_size) = 128;
  TORCH_ARG(int64_t, num_layers) = 1;
  TORCH_ARG(bool, bidirectional) = false;
  TORCH_ARG(double, dropout) = 0.0;  ///< between layers and before the head
  TORCH_ARG(int64_t, num_classes) = 2;
  /// >= 0 (token inputs only): the padding id. Sequences are right-padded; each is read up to
  /// its length (packed), so padding does not change the result.
  TORCH_ARG(int64_t, pad_id) = -1;
};

/// [embedding →] LSTM/GRU → the top layer's final hidden state (both directions concatenated)
/// → dropout → `fc`. Names: embedding.weight, rnn.weight_ih_l0, ..., fc.weight, fc.bias — as a
/// torch.nn.Module with attributes embedding, rnn (batch_first) and fc.
class RNNClassifierImpl : public torch::nn::Module {
 public:
  explicit RNNClassifierImpl(const RNNClassifierOptions& options = {});
  /// ids (B, T) int64, or features (B, T, input_size) → logits (B, num_classes)
  at::Tensor forward(const at::Tensor& x);
  void reset();

  RNNClassifierOptions options;
  torch::nn::Embedding embedding{nullptr};  ///< null for feature inputs
  torch::nn::LSTM lstm{nullptr};            ///< the one of lstm / gru that `cell` names
  torch::nn::GRU gru{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(RNNClassifier);

/// Options of RNNLanguageModel.
///
///   RNNLanguageModel lm(RNNLanguageModelOptions().vocab_size(96).hidden_size(256).num_layers(2));
struct RNNLanguageModelOptions {
  TORCH_ARG(std::string, cell) = "lstm";  ///< lstm | gru
  TORCH_ARG(int64_t, vocab_size) = 256;   ///< characters or tokens
  TORCH_ARG(int64_t, embedding_dim) = 64;
  TORCH_ARG(int64_t, hidden_size) = 256;
  TORCH_ARG(int64_t, num_layers) = 2;
  TORCH_ARG(double, dropout) = 0.0;  ///< between layers and before the head
  /// The output layer reuses embedding.weight (needs embedding_dim == hidden_size); fc keeps
  /// only its bias, as PyTorch's word_language_model with `decoder.weight = encoder.weight`.
  TORCH_ARG(bool, tie_weights) = false;
};

/// The recurrent state an RNNLanguageModel carries from one call to the next: h (and c for an
/// LSTM), each (num_layers, B, hidden_size); undefined = zeros (the start of a sequence).
struct RNNState {
  at::Tensor h, c;
};

/// A causal (unidirectional) character / token language model: embedding → LSTM/GRU → dropout
/// → `fc` over the vocabulary at every position. Names as RNNClassifier's. Tied, fc.weight is
/// not a parameter of its own (a torch.save file whose fc.weight aliases embedding.weight loads).
class RNNLanguageModelImpl : public torch::nn::Module {
 public:
  explicit RNNLanguageModelImpl(const RNNLanguageModelOptions& options = {});
  /// ids (B, T) int64 → next-token logits (B, T, vocab_size)
  at::Tensor forward(const at::Tensor& ids);
  /// ids (B, T) that continue the sequence `state` ends → logits (B, T, vocab_size); `state`
  /// becomes the state after them. forward(ids) equals a step from an empty state.
  at::Tensor forward_step(const at::Tensor& ids, RNNState& state);
  void reset();

  RNNLanguageModelOptions options;
  torch::nn::Embedding embedding{nullptr};
  torch::nn::LSTM lstm{nullptr};
  torch::nn::GRU gru{nullptr};
  torch::nn::Linear fc{nullptr};  ///< null when tied
  at::Tensor tied_bias;           ///< fc.bias when tied
};
TORCH_MODULE(RNNLanguageModel);

}  // namespace lathe::models
