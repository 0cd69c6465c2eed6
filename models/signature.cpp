// Zoo model signatures, read from the built module's options.
#include "models/signature.h"

#include <limits>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "lathe/core/error.h"
#include "models/cnn/convnet.h"
#include "models/cnn/mobilenet.h"
#include "models/cnn/resnet.h"
#include "models/rnn/rnn.h"
#include "models/tabular/tabular.h"
#include "models/transformer/bert.h"
#include "models/transformer/gpt2.h"
#include "models/transformer/llama.h"
#include "models/transformer/vit.h"

namespace lathe::models {
namespace {

/// Example sequence length: short, and within the model's position table.
constexpr int64_t kSeq = 8;
const std::map<int64_t, std::string> kBatch{{0, "batch"}};
const std::map<int64_t, std::string> kBatchSeq{{0, "batch"}, {1, "seq"}};
const std::map<int64_t, std::string> kBatchSpatial{{0, "batch"}, {2, "height"}, {3, "width"}};

/// (2, C, side, side); `any_size`: the forward takes other sides too.
InputSignature images(int64_t channels, int64_t side, bool any_size = false) {
  return {"images", {2, channels, side, side}, 0, any_size ? kBatchSpatial : kBatch};
}

}  // namespace

ModelSignature model_signature(const torch::nn::Module& m, const SignatureSizes& sizes) {
  // A run's text length (within the model's position table), else a short example.
  const auto seq = [&](int64_t max_len) {
    return sizes.seq_len > 0 ? std::min(sizes.seq_len, max_len) : std::min(kSeq, max_len);
  };
  const auto ids = [&](int64_t vocab, int64_t max_len) {
    return InputSignature{"input_ids", {2, seq(max_len)}, vocab, kBatchSeq};
  };
  const auto side = [&](int64_t fallback) { return sizes.side > 0 ? sizes.side : fallback; };
  constexpr int64_t kAny = std::numeric_limits<int64_t>::max();

  if (const auto* c = dynamic_cast<const ConvNetImpl*>(&m)) {
    return {{images(c->options.in_channels(), side(c->options.image_size()))}, "logits"};
  }
  if (const auto* r = dynamic_cast<const ResNetImpl*>(&m)) {
    return {{images(r->options.in_channels(), side(r->options.small_input() ? 32 : 224), true)},
            "logits"};
  }
  if (const auto* mb = dynamic_cast<const MobileNetV2Impl*>(&m)) {
    return {{images(mb->options.in_channels(), side(224), true)}, "logits"};
  }
  if (const auto* v = dynamic_cast<const ViTImpl*>(&m)) {
    return {{images(v->options.in_channels(), side(v->options.image_size()))}, "logits"};
  }
  if (const auto* r = dynamic_cast<const RNNClassifierImpl*>(&m)) {
    const auto& o = r->options;
    if (o.vocab_size() > 0) return {{ids(o.vocab_size(), kAny)}, "logits"};
    return {{{"features", {2, seq(kAny), o.input_size()}, 0, kBatchSeq}}, "logits"};
  }
  if (const auto* l = dynamic_cast<const RNNLanguageModelImpl*>(&m)) {
    return {{ids(l->options.vocab_size(), kAny)}, "logits"};
  }
  if (const auto* g = dynamic_cast<const GPT2Impl*>(&m)) {
    return {{ids(g->options.vocab_size(), g->options.n_positions())}, "logits"};
  }
  if (const auto* l = dynamic_cast<const LlamaImpl*>(&m)) {
    return {{ids(l->options.vocab_size(), l->options.max_position_embeddings())}, "logits"};
  }
  if (const auto* b = dynamic_cast<const BertImpl*>(&m)) {
    const auto& o = b->options;
    InputSignature mask{"attention_mask", {2, seq(o.max_position_embeddings())}, 2, kBatchSeq};
    return {{ids(o.vocab_size(), o.max_position_embeddings()), mask}, "last_hidden_state"};
  }
  if (const auto* b = dynamic_cast<const BertClassifierImpl*>(&m)) {
    const auto& o = b->options.bert();
    InputSignature mask{"attention_mask", {2, seq(o.max_position_embeddings())}, 2, kBatchSeq};
    return {{ids(o.vocab_size(), o.max_position_embeddings()), mask}, "logits"};
  }
  if (const auto* p = dynamic_cast<const MLPImpl*>(&m)) {
    return {{{"features", {2, p->options.in_features()}, 0, kBatch}}, "output"};
  }
  if (const auto* p = dynamic_cast<const LinearModelImpl*>(&m)) {
    return {{{"features", {2, p->options.in_features()}, 0, kBatch}}, "output"};
  }
  throw ModelError(fmt::format("'{}' is not a zoo model: give its example inputs yourself",
                               m.name()));
}

std::vector<at::Tensor> example_inputs(const ModelSignature& signature, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<at::Tensor> out;
  for (const InputSignature& in : signature.inputs) {
    if (in.id_limit == 2) {  // a mask: attend everywhere
      out.push_back(at::ones(in.shape, at::kLong));
    } else if (in.id_limit > 0) {
      out.push_back(at::randint(0, in.id_limit, in.shape, gen, at::kLong));
    } else {
      out.push_back(at::randn(in.shape, gen, at::kFloat));
    }
  }
  return out;
}

}  // namespace lathe::models
