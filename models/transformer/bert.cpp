// BERT: embeddings, post-LayerNorm encoder layers, pooler, classifier and Hugging Face's init.
#include "models/transformer/bert.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/init.h>

#include <memory>

#include "lathe/core/error.h"
#include "lathe/core/profile_scope.h"
#include "models/checkpoint.h"
#include "models/transformer/attention.h"

namespace lathe::models {
namespace {
namespace nn = torch::nn;

nn::LayerNorm layer_norm(const BertOptions& o) {
  return nn::LayerNorm(nn::LayerNormOptions({o.hidden_size()}).eps(o.layer_norm_eps()));
}

/// Hugging Face's BERT init: Linear and Embedding N(0, 0.02), biases 0, LayerNorm 1 / 0.
void init_bert_weights(nn::Module& root) {
  for (auto& m : root.modules(/*include_self=*/false)) {
    if (auto* fc = m->as<nn::Linear>()) {
      nn::init::normal_(fc->weight, 0.0, 0.02);
      if (fc->bias.defined()) nn::init::zeros_(fc->bias);
    } else if (auto* e = m->as<nn::Embedding>()) {
      nn::init::normal_(e->weight, 0.0, 0.02);
    }
  }
}

}  // namespace

BertLayerImpl::BertLayerImpl(const BertOptions& o) : options(o) {
  const int64_t H = o.hidden_size();
  auto attention = group(*this, "attention");
  auto self = group(*attention, "self");
  query = self->register_module("query", Linear(H, H));
  key = self->register_module("key", Linear(H, H));
  value = self->register_module("value", Linear(H, H));
  auto attention_output = group(*attention, "output");
  attention_dense = attention_output->register_module("dense", Linear(H, H));
  attention_norm = attention_output->register_module("LayerNorm", layer_norm(o));
  intermediate =
      group(*this, "intermediate")->register_module("dense", Linear(H, o.intermediate_size()));
  auto output = group(*this, "output");
  output_dense = output->register_module("dense", Linear(o.intermediate_size(), H));
  output_norm = output->register_module("LayerNorm", layer_norm(o));
}

at::Tensor BertLayerImpl::forward(const at::Tensor& x, const at::Tensor& attention_mask) {
  const double p = options.hidden_dropout_prob();
  at::Tensor h;  // (B, T, H)
  {
    const ProfileScope scope("attention");
    const at::Tensor a = attend(query(x), key(x), value(x), options.num_attention_heads(),
                                attention_mask, /*causal=*/false,
                                options.attention_probs_dropout_prob(), is_training());
    h = attention_norm(x + at::dropout(attention_dense(a), p, is_training()));
  }
  const ProfileScope scope("intermediate+output");
  const at::Tensor m = output_dense(at::gelu(intermediate(h)));  // (B, T, H), erf GELU
  return output_norm(h + at::dropout(m, p, is_training()));
}

BertImpl::BertImpl(const BertOptions& options_) : options(options_) { reset(); }

void BertImpl::reset() {
  const auto& o = options;
  LATHE_CHECK(o.vocab_size() > 0 && o.hidden_size() > 0 && o.num_hidden_layers() > 0 &&
                  o.num_attention_heads() > 0 && o.intermediate_size() > 0 &&
                  o.max_position_embeddings() > 0 && o.type_vocab_size() > 0,
              ModelError,
              "bert: every size (vocab, hidden, layers, heads, intermediate, "
              "positions, token types) must be positive");
  LATHE_CHECK(o.hidden_size() % o.num_attention_heads() == 0, ModelError,
              "bert: hidden_size {} is not divisible by num_attention_heads {}", o.hidden_size(),
              o.num_attention_heads());
  LATHE_CHECK(o.pad_token_id() >= 0 && o.pad_token_id() < o.vocab_size(), ModelError,
              "bert: pad_token_id {} must be in [0, vocab_size {})", o.pad_token_id(),
              o.vocab_size());
  auto embeddings = group(*this, "embeddings");
  word_embeddings = embeddings->register_module(
      "word_embeddings",
      nn::Embedding(
          nn::EmbeddingOptions(o.vocab_size(), o.hidden_size()).padding_idx(o.pad_token_id())));
  position_embeddings = embeddings->register_module(
      "position_embeddings", nn::Embedding(o.max_position_embeddings(), o.hidden_size()));
  token_type_embeddings = embeddings->register_module(
      "token_type_embeddings", nn::Embedding(o.type_vocab_size(), o.hidden_size()));
  embeddings_norm = embeddings->register_module("LayerNorm", layer_norm(o));
  layer = group(*this, "encoder")->register_module("layer", nn::ModuleList());
  layer_names_.clear();
  for (int64_t i = 0; i < o.num_hidden_layers(); ++i) {
    layer->push_back(BertLayer(o));
    layer_names_.push_back(fmt::format("encoder.layer.{}", i));  // the profiler's name, made once
  }
  if (o.add_pooling_layer())
    pooler = group(*this, "pooler")
                 ->register_module("dense", Linear(o.hidden_size(), o.hidden_size()));
  init_bert_weights(*this);
  torch::NoGradGuard no_grad;
  word_embeddings->weight[o.pad_token_id()].zero_();  // as Hugging Face's padding_idx init
}

at::Tensor BertImpl::mask_for(const at::Tensor& ids, const at::Tensor& attention_mask) const {
  return attention_mask.defined() ? attention_mask : ids.ne(options.pad_token_id());
}

at::Tensor BertImpl::forward(const at::Tensor& ids, const at::Tensor& attention_mask,
                             const at::Tensor& token_type_ids) {
  const auto& o = options;
  LATHE_CHECK(ids.dim() == 2 && !at::isFloatingType(ids.scalar_type()), ModelError,
              "bert: expected token ids (B, T) of an integer type, got {} {}",
              c10::toString(ids.scalar_type()), ids.sizes());
  const int64_t T = ids.size(1);
  LATHE_CHECK(T <= o.max_position_embeddings(), ModelError,
              "bert: sequence of {} tokens is longer than max_position_embeddings {}", T,
              o.max_position_embeddings());
  at::Tensor x;  // (B, T, H)
  {
    const ProfileScope scope("embeddings");
    const at::Tensor pos = at::arange(T, ids.options().dtype(at::kLong));  // (T,)
    const at::Tensor types = token_type_ids.defined() ? token_type_ids : at::zeros_like(ids);
    x = word_embeddings(ids) + position_embeddings(pos) + token_type_embeddings(types);
    x = at::dropout(embeddings_norm(x), o.hidden_dropout_prob(), is_training());
  }
  const at::Tensor mask = mask_for(ids, attention_mask);  // (B, T)
  const bool recompute = o.gradient_checkpointing() && is_training();
  for (size_t i = 0; i < layer->size(); ++i) {
    const ProfileScope scope(layer_names_[i]);
    BertLayerImpl* b = layer[i]->as<BertLayer>();
    if (recompute)
      x = checkpointed([b, mask](const at::Tensor& in) { return b->forward(in, mask); }, x);
    else
      x = b->forward(x, mask);
  }
  return x;  // (B, T, H)
}

at::Tensor BertImpl::pool(const at::Tensor& hidden) {
  LATHE_CHECK(static_cast<bool>(pooler), ModelError,
              "bert: pool() needs the pooling layer (add_pooling_layer = true)");
  return at::tanh(pooler(hidden.select(1, 0)));  // (B, H)
}

BertClassifierImpl::BertClassifierImpl(const BertClassifierOptions& options_) : options(options_) {
  reset();
}

void BertClassifierImpl::reset() {
  LATHE_CHECK(options.num_labels() > 0, ModelError,
              "bert_classifier: num_labels {} must be positive", options.num_labels());
  BertOptions encoder = options.bert();
  encoder.add_pooling_layer(true);
  bert = register_module("bert", Bert(encoder));
  classifier =
      register_module("classifier", Linear(encoder.hidden_size(), options.num_labels()));
  nn::init::normal_(classifier->weight, 0.0, 0.02);
  nn::init::zeros_(classifier->bias);
}

at::Tensor BertClassifierImpl::forward(const at::Tensor& ids, const at::Tensor& attention_mask,
                                       const at::Tensor& token_type_ids) {
  const double p = options.classifier_dropout() >= 0 ? options.classifier_dropout()
                                                     : options.bert().hidden_dropout_prob();
  const at::Tensor pooled =
      bert->pool(bert->forward(ids, attention_mask, token_type_ids));  // (B, H)
  return classifier(at::dropout(pooled, p, is_training()));            // (B, num_labels)
}

}  // namespace lathe::models
