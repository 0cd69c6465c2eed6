// The Llama family (Llama, Qwen2, Mistral) against transformers on random weights: logits and every
// parameter gradient in fp32, masked and cached forwards, bf16 autocast against a float64 forward.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "lathe/ckpt/safetensors.h"
#include "lathe/ckpt/state_dict.h"
#include "lathe/config/config.h"
#include "lathe/core/autocast.h"
#include "lathe/core/error.h"
#include "models/checkpoint.h"
#include "models/registry.h"
#include "models/transformer/llama.h"
#include "tests/support.h"
#include "tests/unit/llama_support.h"

namespace zoo = lathe::models;
using lathe::testing::expect_error;
using lathe::testing::llama_reference;
using lathe::testing::LlamaReference;

namespace {

/// fp32: logits and gradients within this of transformers'.
constexpr double kTol = 1e-5;

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

/// The zoo's llama built from the case's options, with the folder's weights loaded strictly.
zoo::Llama load(const LlamaReference& ref, std::vector<std::string> extra = {}) {
  std::vector<std::string> options = ref.options;
  options.insert(options.end(), extra.begin(), extra.end());
  auto any = zoo::build_model(lathe::config::parse_model_section("llama", options));
  auto model = std::dynamic_pointer_cast<zoo::LlamaImpl>(any.ptr());
  const auto report = lathe::ckpt::load_weights(*model, ref.dir / "hf" / "model.safetensors");
  EXPECT_TRUE(report.clean()) << report.summary();
  EXPECT_EQ(zoo::parameter_count(*model), ref.params);
  return zoo::Llama(model);
}

/// max |ours - transformers'| over the logits and over every parameter's gradient of
/// sum(logits · grad_output).
std::pair<double, double> logits_and_gradients(zoo::Llama& model, const LlamaReference& ref) {
  model->zero_grad();
  const at::Tensor logits = model->forward(ref.get("input_ids"));
  (logits * ref.get("grad_output")).sum().backward();
  double grads = 0;
  int64_t checked = 0;
  for (const auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    const at::Tensor& p = item.value();
    SCOPED_TRACE(name);
    EXPECT_TRUE(p.grad().defined());
    if (!p.grad().defined()) continue;
    grads = std::max(grads, max_diff(p.grad(), ref.get("grad." + name)));
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int64_t>(model->parameters().size()));
  return {max_diff(logits.detach(), ref.get("logits")), grads};
}

class LlamaParity : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaParity, LogitsAndEveryGradientMatchTransformersInFp32) {
  const LlamaReference ref = llama_reference(GetParam());
  zoo::Llama model = load(ref);
  model->train();  // no dropout in these models: train and eval agree
  const auto [logits, grads] = logits_and_gradients(model, ref);
  std::printf("[ parity   ] %s fp32: max |logits diff| %.3g, max |grad diff| %.3g\n",
              GetParam().c_str(), logits, grads);
  EXPECT_LE(logits, kTol);
  EXPECT_LE(grads, kTol);

  // Activation checkpointing recomputes each layer in backward: the same gradients.
  zoo::Llama recomputed = load(ref, {"gradient_checkpointing=true"});
  recomputed->train();
  const int64_t before = zoo::checkpointed_calls();
  const auto [logits2, grads2] = logits_and_gradients(recomputed, ref);
  EXPECT_GT(zoo::checkpointed_calls(), before);
  EXPECT_LE(logits2, kTol);
  EXPECT_LE(grads2, kTol);
}

TEST_P(LlamaParity, PaddedAndCachedForwardsMatch) {
  const LlamaReference ref = llama_reference(GetParam());
  zoo::Llama model = load(ref);
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor ids = ref.get("input_ids"), mask = ref.get("attention_mask");
  // Left padding: the positions that are tokens match transformers' masked forward.
  const at::Tensor keep = mask.to(at::kBool);
  const at::Tensor masked = model->forward(ids, mask);
  const double padded = max_diff(masked.index({keep}), ref.get("logits_masked").index({keep}));
  EXPECT_LE(padded, kTol);
  // The cache: 4 tokens at once, then one at a time, then 3 at once, equal the full forward
  // (sliding windows included: the sequence is longer than the window).
  const at::Tensor full = model->forward(ids);
  auto [first, cache] = model->forward_cached(ids.narrow(1, 0, 4));
  std::vector<at::Tensor> parts{first};
  for (int64_t t = 4; t < 8; ++t) {
    auto [step, next] = model->forward_cached(ids.narrow(1, t, 1), std::move(cache));
    parts.push_back(step);
    cache = std::move(next);
  }
  auto [last, done] = model->forward_cached(ids.narrow(1, 8, 3), std::move(cache));
  parts.push_back(last);
  EXPECT_EQ(done.length(), 11);
  const double cached = max_diff(at::cat(parts, 1), full);
  std::printf("[ parity   ] %s: padded %.3g, cached vs full %.3g\n", GetParam().c_str(), padded,
              cached);
  EXPECT_LE(cached, kTol);
}

// bf16 autocast on the CPU against the model in float64: within bf16's own error, which we take
// as what transformers itself gives under the same autocast (max |transformers_bf16 - float64|)
// with a 25% margin for rounding in a different order.
TEST_P(LlamaParity, Bf16AutocastIsWithinBf16sOwnError) {
  const LlamaReference ref = llama_reference(GetParam());
  zoo::Llama model = load(ref);
  model->eval();
  torch::NoGradGuard no_grad;
  at::Tensor ours;
  {
    lathe::AutocastGuard amp(c10::DeviceType::CPU, at::kBFloat16, true);
    ours = model->forward(ref.get("input_ids"));
  }
  EXPECT_EQ(ours.scalar_type(), at::kBFloat16);
  const at::Tensor exact = ref.get("logits_double");
  const double mine = max_diff(ours, exact), theirs = max_diff(ref.get("logits_bf16"), exact);
  std::printf("[ parity   ] %s bf16: max |ours - float64| %.3g, transformers' %.3g\n",
              GetParam().c_str(), mine, theirs);
  EXPECT_LE(mine, 1.25 * theirs);
}

INSTANTIATE_TEST_SUITE_P(Transformers, LlamaParity,
                         ::testing::Values("llama_gqa4", "llama_mha_tied_linear",
                                           "llama_llama3_bias", "qwen2", "mistral"));

TEST(Llama, NamesAreTransformersAndBadOptionsAreModelErrors) {
  zoo::Llama tied(zoo::LlamaOptions()
                      .vocab_size(16)
                      .hidden_size(8)
                      .intermediate_size(12)
                      .num_hidden_layers(1)
                      .num_attention_heads(2)
                      .num_key_value_heads(1)
                      .qkv_bias(true)
                      .tie_word_embeddings(true));
  std::vector<std::string> names;
  for (const auto& item : tied->named_parameters()) names.push_back(item.key());
  EXPECT_EQ(names, (std::vector<std::string>{
                       "model.embed_tokens.weight",
                       "model.layers.0.self_attn.q_proj.weight",
                       "model.layers.0.self_attn.q_proj.bias",
                       "model.layers.0.self_attn.k_proj.weight",
                       "model.layers.0.self_attn.k_proj.bias",
                       "model.layers.0.self_attn.v_proj.weight",
                       "model.layers.0.self_attn.v_proj.bias",
                       "model.layers.0.self_attn.o_proj.weight",
                       "model.layers.0.mlp.gate_proj.weight",
                       "model.layers.0.mlp.up_proj.weight",
                       "model.layers.0.mlp.down_proj.weight",
                       "model.layers.0.input_layernorm.weight",
                       "model.layers.0.post_attention_layernorm.weight",
                       "model.norm.weight",
                   }));
  const auto small = [] {
    return zoo::LlamaOptions()
        .vocab_size(16)
        .hidden_size(8)
        .intermediate_size(12)
        .num_hidden_layers(1);
  };
  expect_error<lathe::ModelError>(
      [&] { zoo::Llama(small().num_attention_heads(4).num_key_value_heads(3)); },
      {"num_attention_heads 4 is not a multiple of num_key_value_heads 3"});
  expect_error<lathe::ModelError>(
      [&] { zoo::Llama(small().num_attention_heads(3)); },
      {"hidden_size 8 is not divisible by num_attention_heads 3", "set model.head_dim"});
  expect_error<lathe::ModelError>(
      [&] { zoo::Llama(small().num_attention_heads(2).rope_scaling("yarn")); },
      {"rope_scaling 'yarn'", "none, linear, llama3"});
  zoo::Llama model(small().num_attention_heads(2));
  expect_error<lathe::ModelError>(
      [&] {
        model->forward(at::randn({1, 3}));
      },
      {"expected token ids (B, T) of an integer type"});
}

}  // namespace
