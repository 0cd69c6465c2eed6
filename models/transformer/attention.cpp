// Transformer pieces: head split/merge, mask construction, the SDPA call, name groups.
#include "models/transformer/attention.h"

#include <ATen/ATen.h>

#include "lathe/core/error.h"

namespace lathe::models {

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t heads,
                  const at::Tensor& key_mask, bool causal, double dropout, bool training) {
  const int64_t B = q.size(0), T = q.size(1), C = q.size(2);
  LATHE_CHECK(C % heads == 0, ModelError, "attention: width {} is not divisible by {} heads", C,
              heads);
  const auto split = [&](const at::Tensor& x) {  // (B, T, C) → (B, h, T, C/h)
    return x.view({B, x.size(1), heads, C / heads}).transpose(1, 2);
  };
  const double p = training ? dropout : 0.0;
  at::Tensor y;  // (B, h, T, C/h)
  if (!key_mask.defined()) {
    y = at::scaled_dot_product_attention(split(q), split(k), split(v), {}, p, causal);
  } else {
    LATHE_CHECK(key_mask.dim() == 2 && key_mask.size(0) == B && key_mask.size(1) == k.size(1),
                ModelError, "attention: mask must be (B, T) = ({}, {}), got {}", B, k.size(1),
                key_mask.sizes());
    at::Tensor allowed = key_mask.to(at::kBool).view({B, 1, 1, k.size(1)});  // (B, 1, 1, S)
    if (causal) {
      allowed = allowed & at::ones({T, k.size(1)}, allowed.options()).tril();  // (B, 1, T, S)
      const at::Tensor none = ~allowed.any(-1, /*keepdim=*/true);              // (B, 1, T, 1)
      allowed = allowed | (none & at::eye(T, k.size(1), allowed.options()));
    }
    y = at::scaled_dot_product_attention(split(q), split(k), split(v), allowed, p, false);
  }
  return y.transpose(1, 2).reshape({B, T, C});  // (B, T, C)
}

std::shared_ptr<torch::nn::Module> group(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

}  // namespace lathe::models
