// Vision Transformer with torchvision's VisionTransformer (vit_b_16) architecture and names.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/lora.h"

namespace lathe::models {

/// Options of ViT (torchvision VisionTransformer's arguments; defaults are vit_b_16).
///
///   ViT vit(ViTOptions().image_size(32).patch_size(4).num_layers(6).num_heads(8)
///               .hidden_dim(256).mlp_dim(512).num_classes(10));
struct ViTOptions {
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(int64_t, patch_size) = 16;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(int64_t, num_layers) = 12;
  TORCH_ARG(int64_t, num_heads) = 12;
  TORCH_ARG(int64_t, hidden_dim) = 768;
  TORCH_ARG(int64_t, mlp_dim) = 3072;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(double, attention_dropout) = 0.0;
  TORCH_ARG(int64_t, num_classes) = 1000;
  /// Activation checkpointing: keep only each encoder block's input and recompute it in backward
  /// (less memory for one more forward pass of them; models/checkpoint.h).
  TORCH_ARG(bool, gradient_checkpointing) = false;
};

/// torchvision's EncoderBlock: x + dropout(self_attention(ln_1(x))), then + mlp(ln_2(·)).
/// self_attention holds nn.MultiheadAttention's in_proj_weight [3D, D], in_proj_bias and
/// out_proj; mlp.0 and mlp.3 are the Linear layers (erf GELU between).
class ViTBlockImpl : public torch::nn::Module {
 public:
  explicit ViTBlockImpl(const ViTOptions& options);
  /// (B, S, D) → (B, S, D)
  at::Tensor forward(const at::Tensor& x);

  ViTOptions options;
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  at::Tensor in_proj_weight, in_proj_bias;  ///< self_attention.in_proj_*
  Linear out_proj{nullptr};                 ///< self_attention.out_proj
  Linear fc1{nullptr}, fc2{nullptr};        ///< mlp.0, mlp.3
};
TORCH_MODULE(ViTBlock);

/// VisionTransformer: conv_proj (patch embedding) → prepend class_token → + encoder.pos_embedding
/// → encoder.layers.encoder_layer_N → encoder.ln → class-token state → heads.head. Names and
/// shapes equal torchvision's, so vit_b_16's pretrained weights load unchanged.
class ViTImpl : public torch::nn::Module {
 public:
  explicit ViTImpl(const ViTOptions& options = {});
  /// (B, in_channels, image_size, image_size) → logits (B, num_classes)
  at::Tensor forward(const at::Tensor& x);
  void reset();

  ViTOptions options;
  torch::nn::Conv2d conv_proj{nullptr};
  at::Tensor class_token;    ///< (1, 1, D)
  at::Tensor pos_embedding;  ///< encoder.pos_embedding (1, S, D)
  std::vector<ViTBlock> layers;
  torch::nn::LayerNorm ln{nullptr};  ///< encoder.ln
  Linear head{nullptr};   ///< heads.head

 private:
  std::vector<std::string> layer_names_;  ///< "encoder_layer_0", ...: the profiler's names
};
TORCH_MODULE(ViT);

}  // namespace lathe::models
