// Recurrent models: construction, packed (padding-aware) sequences and the forward passes.
#include "models/rnn/rnn.h"

#include <ATen/ATen.h>
#include <torch/nn/utils/rnn.h>

#include <cmath>
#include <memory>

#include "lathe/core/error.h"
#include "lathe/core/profile_scope.h"
#include "models/lstm.h"

namespace lathe::models {
namespace {

namespace nn = torch::nn;

/// Builds the LSTM or GRU `cell` names into `lstm` / `gru` and registers it as "rnn".
void make_rnn(nn::Module& owner, const char* model, const std::string& cell, int64_t input,
              int64_t hidden, int64_t layers, bool bidirectional, double dropout, nn::LSTM& lstm,
              nn::GRU& gru) {
  LATHE_CHECK(cell == "lstm" || cell == "gru", ModelError, "{}: cell '{}' is not one of lstm, gru",
              model, cell);
  LATHE_CHECK(input > 0 && hidden > 0 && layers > 0, ModelError,
              "{}: input size ({}), hidden_size ({}) and num_layers ({}) must be positive", model,
              input, hidden, layers);
  LATHE_CHECK(dropout >= 0 && dropout < 1, ModelError, "{}: dropout {} must be in [0, 1)", model,
              dropout);
  const double between = layers > 1 ? dropout : 0.0;  // as torch.nn.LSTM: only between layers
  if (cell == "lstm") {
    lstm = owner.register_module("rnn", nn::LSTM(nn::LSTMOptions(input, hidden)
                                                     .num_layers(layers)
                                                     .batch_first(true)
                                                     .bidirectional(bidirectional)
                                                     .dropout(between)));
  } else {
    gru = owner.register_module("rnn", nn::GRU(nn::GRUOptions(input, hidden)
                                                   .num_layers(layers)
                                                   .batch_first(true)
                                                   .bidirectional(bidirectional)
                                                   .dropout(between)));
  }
}

}  // namespace

RNNClassifierImpl::RNNClassifierImpl(const RNNClassifierOptions& options_) : options(options_) {
  reset();
}

void RNNClassifierImpl::reset() {
  const auto& o = options;
  LATHE_CHECK(o.num_classes() > 0, ModelError, "rnn_classifier: num_classes {} must be positive",
              o.num_classes());
  LATHE_CHECK(o.vocab_size() >= 0, ModelError, "rnn_classifier: vocab_size {} is negative",
              o.vocab_size());
  LATHE_CHECK(o.pad_id() < 0 || (o.vocab_size() > 0 && o.pad_id() < o.vocab_size()), ModelError,
              "rnn_classifier: pad_id {} needs token inputs (vocab_size > 0) and must be below "
              "vocab_size {}",
              o.pad_id(), o.vocab_size());
  int64_t input = o.input_size();
  if (o.vocab_size() > 0) {
    embedding = register_module("embedding", nn::Embedding(o.vocab_size(), o.embedding_dim()));
    input = o.embedding_dim();
  }
  make_rnn(*this, "rnn_classifier", o.cell(), input, o.hidden_size(), o.num_layers(),
           o.bidirectional(), o.dropout(), lstm, gru);
  fc = register_module("fc",
                       nn::Linear(o.hidden_size() * (o.bidirectional() ? 2 : 1), o.num_classes()));
}

at::Tensor RNNClassifierImpl::forward(const at::Tensor& x) {
  const auto& o = options;
  at::Tensor h;  // (B, T, E)
  if (embedding) {
    LATHE_CHECK(x.dim() == 2 && !at::isFloatingType(x.scalar_type()), ModelError,
                "rnn_classifier: expected token ids (B, T) of an integer type, got {} {}",
                c10::toString(x.scalar_type()), x.sizes());
    h = embedding(x);
  } else {
    LATHE_CHECK(x.dim() == 3 && x.size(2) == o.input_size(), ModelError,
                "rnn_classifier: expected features (B, T, {}), got {}", o.input_size(), x.sizes());
    h = x;
  }
  at::Tensor h_n;  // (layers · dirs, B, H)
  const ProfileScope rnn_scope(lstm ? "lstm" : "gru");
  if (o.pad_id() >= 0) {
    // Right-padded sequences, each read to its own length (at least 1 step).
    const at::Tensor lengths = (x != o.pad_id()).sum(1).clamp_min(1).cpu();  // (B,)
    auto packed = nn::utils::rnn::pack_padded_sequence(h, lengths, /*batch_first=*/true,
                                                       /*enforce_sorted=*/false);
    h_n = lstm ? std::get<0>(std::get<1>(lstm->forward_with_packed_input(packed)))
               : std::get<1>(gru->forward_with_packed_input(packed));
  } else {
    h_n = lstm ? std::get<1>(lstm_forward(*lstm, h)).h : std::get<1>(gru->forward(h));
  }
  at::Tensor last = o.bidirectional() ? at::cat({h_n[-2], h_n[-1]}, 1) : h_n[-1];  // (B, dirs·H)
  last = at::dropout(last, o.dropout(), is_training());
  const ProfileScope scope("fc");
  return fc(last);  // (B, num_classes)
}

RNNLanguageModelImpl::RNNLanguageModelImpl(const RNNLanguageModelOptions& options_)
    : options(options_) {
  reset();
}

void RNNLanguageModelImpl::reset() {
  const auto& o = options;
  LATHE_CHECK(o.vocab_size() > 0 && o.embedding_dim() > 0, ModelError,
              "rnn_lm: vocab_size ({}) and embedding_dim ({}) must be positive", o.vocab_size(),
              o.embedding_dim());
  embedding = register_module("embedding", nn::Embedding(o.vocab_size(), o.embedding_dim()));
  make_rnn(*this, "rnn_lm", o.cell(), o.embedding_dim(), o.hidden_size(), o.num_layers(),
           /*bidirectional=*/false, o.dropout(), lstm, gru);
  if (!o.tie_weights()) {
    fc = register_module("fc", nn::Linear(o.hidden_size(), o.vocab_size()));
    return;
  }
  LATHE_CHECK(o.embedding_dim() == o.hidden_size(), ModelError,
              "rnn_lm: tie_weights needs embedding_dim ({}) == hidden_size ({})", o.embedding_dim(),
              o.hidden_size());
  const double bound = 1.0 / std::sqrt(static_cast<double>(o.hidden_size()));  // as nn.Linear
  auto head = register_module("fc", std::make_shared<nn::Module>());
  tied_bias = head->register_parameter("bias", at::empty({o.vocab_size()}).uniform_(-bound, bound));
}

at::Tensor RNNLanguageModelImpl::forward(const at::Tensor& ids) {
  LATHE_CHECK(ids.dim() == 2 && !at::isFloatingType(ids.scalar_type()), ModelError,
              "rnn_lm: expected token ids (B, T) of an integer type, got {} {}",
              c10::toString(ids.scalar_type()), ids.sizes());
  at::Tensor h;  // (B, T, H)
  {
    const ProfileScope scope(lstm ? "lstm" : "gru");  // with the embedding lookup before it
    // lstm_forward looks the ids up itself: on the CPU, through a (vocab, 4H) table.
    h = lstm ? std::get<0>(lstm_forward(*lstm, ids, embedding->weight))
             : std::get<0>(gru->forward(embedding(ids)));
    h = at::dropout(h, options.dropout(), is_training());
  }
  const ProfileScope scope("fc");
  return fc ? fc(h) : at::linear(h, embedding->weight, tied_bias);  // (B, T, vocab_size)
}

at::Tensor RNNLanguageModelImpl::forward_step(const at::Tensor& ids, RNNState& state) {
  LATHE_CHECK(ids.dim() == 2 && !at::isFloatingType(ids.scalar_type()), ModelError,
              "rnn_lm: expected token ids (B, T) of an integer type, got {} {}",
              c10::toString(ids.scalar_type()), ids.sizes());
  at::Tensor h;  // (B, T, H)
  if (lstm) {
    auto [out, next] = lstm_forward(*lstm, ids, embedding->weight, {state.h, state.c});
    h = out;
    state.h = next.h;
    state.c = next.c;
  } else {
    std::tie(h, state.h) = gru->forward(embedding(ids), state.h);
  }
  h = at::dropout(h, options.dropout(), is_training());
  return fc ? fc(h) : at::linear(h, embedding->weight, tied_bias);  // (B, T, vocab_size)
}

}  // namespace lathe::models
