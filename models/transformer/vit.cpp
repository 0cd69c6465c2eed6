// ViT: patch embedding, encoder blocks on SDPA, torchvision's initialisation and forward pass.
#include "models/transformer/vit.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/init.h>

#include <cmath>
#include <memory>
#include <string>

#include "lathe/core/error.h"
#include "lathe/core/profile_scope.h"
#include "models/checkpoint.h"
#include "models/transformer/attention.h"

namespace lathe::models {
namespace {
namespace nn = torch::nn;

nn::LayerNorm layer_norm(int64_t d) { return nn::LayerNorm(nn::LayerNormOptions({d}).eps(1e-6)); }

}  // namespace

ViTBlockImpl::ViTBlockImpl(const ViTOptions& o) : options(o) {
  const int64_t D = o.hidden_dim();
  ln_1 = register_module("ln_1", layer_norm(D));
  auto attn = group(*this, "self_attention");
  in_proj_weight = attn->register_parameter("in_proj_weight", at::empty({3 * D, D}));
  in_proj_bias = attn->register_parameter("in_proj_bias", at::zeros({3 * D}));
  out_proj = attn->register_module("out_proj", Linear(D, D));
  ln_2 = register_module("ln_2", layer_norm(D));
  auto mlp = group(*this, "mlp");
  fc1 = mlp->register_module("0", Linear(D, o.mlp_dim()));
  fc2 = mlp->register_module("3", Linear(o.mlp_dim(), D));
  // torchvision: MultiheadAttention's xavier-uniform in_proj and zero biases; MLP Linear layers
  // xavier-uniform with N(0, 1e-6) biases.
  nn::init::xavier_uniform_(in_proj_weight);
  nn::init::zeros_(out_proj->bias);
  for (auto* fc : {&fc1, &fc2}) {
    nn::init::xavier_uniform_((*fc)->weight);
    nn::init::normal_((*fc)->bias, 0.0, 1e-6);
  }
}

at::Tensor ViTBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h;  // (B, S, D)
  {
    const ProfileScope scope("self_attention");
    const std::vector<at::Tensor> qkv =
        at::linear(ln_1(x), in_proj_weight, in_proj_bias).chunk(3, -1);  // 3 × (B, S, D)
    const at::Tensor a = attend(qkv[0], qkv[1], qkv[2], options.num_heads(), {},
                                /*causal=*/false, options.attention_dropout(), is_training());
    h = x + at::dropout(out_proj(a), options.dropout(), is_training());
  }
  const ProfileScope scope("mlp");
  at::Tensor m = at::dropout(at::gelu(fc1(ln_2(h))), options.dropout(), is_training());
  return h + at::dropout(fc2(m), options.dropout(), is_training());
}

ViTImpl::ViTImpl(const ViTOptions& options_) : options(options_) { reset(); }

void ViTImpl::reset() {
  const auto& o = options;
  LATHE_CHECK(o.patch_size() > 0 && o.image_size() % o.patch_size() == 0, ModelError,
              "vit: image_size {} must be a multiple of patch_size {}", o.image_size(),
              o.patch_size());
  LATHE_CHECK(o.hidden_dim() > 0 && o.num_heads() > 0 && o.hidden_dim() % o.num_heads() == 0,
              ModelError, "vit: hidden_dim {} must be a positive multiple of num_heads {}",
              o.hidden_dim(), o.num_heads());
  LATHE_CHECK(o.num_layers() > 0 && o.mlp_dim() > 0 && o.num_classes() > 0 && o.in_channels() > 0,
              ModelError,
              "vit: num_layers ({}), mlp_dim ({}), num_classes ({}) and in_channels "
              "({}) must be positive",
              o.num_layers(), o.mlp_dim(), o.num_classes(), o.in_channels());
  const int64_t D = o.hidden_dim();
  const int64_t side = o.image_size() / o.patch_size();
  conv_proj = register_module(
      "conv_proj",
      nn::Conv2d(nn::Conv2dOptions(o.in_channels(), D, o.patch_size()).stride(o.patch_size())));
  class_token = register_parameter("class_token", at::zeros({1, 1, D}));
  auto encoder = group(*this, "encoder");
  pos_embedding = encoder->register_parameter("pos_embedding", at::empty({1, side * side + 1, D}));
  auto blocks = group(*encoder, "layers");
  layers.clear();
  layer_names_.clear();
  for (int64_t i = 0; i < o.num_layers(); ++i) {
    layer_names_.push_back("encoder_layer_" + std::to_string(i));  // also the profiler's name
    layers.push_back(blocks->register_module(layer_names_.back(), ViTBlock(o)));
  }
  ln = encoder->register_module("ln", layer_norm(D));
  head = group(*this, "heads")->register_module("head", Linear(D, o.num_classes()));

  // torchvision: truncated-normal patch embedding (std sqrt(1/fan_in)), N(0, 0.02) positions,
  // zero head.
  const double fan_in = static_cast<double>(o.in_channels() * o.patch_size() * o.patch_size());
  {
    torch::NoGradGuard no_grad;  // trunc_normal_(std, a=-2, b=2) as torchvision calls it
    conv_proj->weight.normal_(0.0, std::sqrt(1.0 / fan_in)).clamp_(-2.0, 2.0);
  }
  nn::init::zeros_(conv_proj->bias);
  nn::init::normal_(pos_embedding, 0.0, 0.02);
  nn::init::zeros_(head->weight);
  nn::init::zeros_(head->bias);
}

at::Tensor ViTImpl::forward(const at::Tensor& x) {
  const auto& o = options;
  LATHE_CHECK(x.dim() == 4 && x.size(1) == o.in_channels() && x.size(2) == o.image_size() &&
                  x.size(3) == o.image_size(),
              ModelError, "vit: expected input (B, {}, {}, {}), got {}", o.in_channels(),
              o.image_size(), o.image_size(), x.sizes());
  const int64_t B = x.size(0);
  at::Tensor h;  // (B, N + 1, D)
  {
    const ProfileScope scope("conv_proj");
    h = conv_proj(x).flatten(2).transpose(1, 2);                           // (B, N, D)
    h = at::cat({class_token.expand({B, -1, -1}), h}, 1) + pos_embedding;  // (B, N + 1, D)
    h = at::dropout(h, o.dropout(), is_training());
  }
  const bool recompute = o.gradient_checkpointing() && is_training();
  for (size_t i = 0; i < layers.size(); ++i) {
    const ProfileScope scope(layer_names_[i]);
    auto& block = layers[i];
    if (recompute) {
      ViTBlockImpl* b = block.get();
      h = checkpointed([b](const at::Tensor& in) { return b->forward(in); }, h);
    } else {
      h = block(h);
    }
  }
  const ProfileScope scope("heads");
  return head(ln(h).select(1, 0));  // (B, num_classes)
}

}  // namespace lathe::models
