// Transformer pieces GPT-2, BERT and ViT share: attention on SDPA (causal, padding), name groups.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <string>

namespace lathe::models {

/// Scaled dot-product attention of already-projected q, k, v (B, T, C) split into `heads` heads
/// of C / heads, through at::scaled_dot_product_attention (flash / memory-efficient kernels on
/// CUDA). `key_mask` (B, T), optional: non-zero for tokens, zero for padding keys nobody may
/// attend to. `causal`: position t attends to positions ≤ t. A query row left with no key to
/// attend to (a padding position under a causal mask) attends to itself, so nothing is NaN.
/// Returns (B, T, C).
///
///   at::Tensor y = attend(q, k, v, /*heads=*/12, attention_mask, /*causal=*/true, 0.1, training);
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t heads,
                  const at::Tensor& key_mask, bool causal, double dropout, bool training);

/// Registers an empty module `name` under `parent` and returns it, so that parameter names nest
/// as the reference's do ("attention.self.query.weight") without a C++ class per level.
std::shared_ptr<torch::nn::Module> group(torch::nn::Module& parent, const std::string& name);

}  // namespace lathe::models
