// ResNet-18/34/50/101/152 with torchvision's architecture and state-dict names.
#pragma once

#include <torch/nn/module.h>
#include "models/batch_norm.h"
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lathe::models {

/// Options of ResNet. `depth` picks torchvision's block type and blocks per stage (18, 34: basic
/// blocks [2,2,2,2] / [3,4,6,3]; 50, 101, 152: bottlenecks [3,4,6,3] / [3,4,23,3] / [3,8,36,3]);
/// a non-empty `layers` overrides the blocks per stage (four numbers).
///
///   ResNet net(ResNetOptions().depth(18).num_classes(10).small_input(true));  // CIFAR-style
struct ResNetOptions {
  TORCH_ARG(int64_t, depth) = 18;
  TORCH_ARG(std::vector<int64_t>, layers) = {};  ///< blocks per stage; empty = from depth
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_channels) = 3;
  /// 3×3 stride-1 conv1 and no max-pool (for 32×32 inputs) instead of 7×7 stride 2 + max-pool.
  TORCH_ARG(bool, small_input) = false;
  TORCH_ARG(int64_t, width_per_group) = 64;     ///< bottleneck inner width (128: wide_resnet50_2)
  TORCH_ARG(bool, zero_init_residual) = false;  ///< last BN of each block starts at zero
  /// Activation checkpointing per residual block (each BasicBlock / Bottleneck of layer1..4):
  /// only a block's input is kept and the block is recomputed in backward; its BatchNorm
  /// running statistics are updated once, as without it (models/checkpoint.h).
  TORCH_ARG(bool, gradient_checkpointing) = false;
};

/// torchvision's BasicBlock (expansion 1): conv1 3×3 → bn1 → relu → conv2 3×3 → bn2, plus the
/// identity or downsample (1×1 conv stride s → BN), then relu.
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in, int64_t planes, int64_t stride);
  /// (B, in, H, W) → (B, planes, H/stride, W/stride)
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};  ///< null when the shapes already match
};
TORCH_MODULE(BasicBlock);

/// torchvision's Bottleneck (ResNet v1.5, expansion 4): conv1 1×1 → conv2 3×3 stride s →
/// conv3 1×1 (each with BN, relu between), plus the identity or downsample, then relu.
class BottleneckImpl : public torch::nn::Module {
 public:
  BottleneckImpl(int64_t in, int64_t planes, int64_t stride, int64_t width_per_group);
  /// (B, in, H, W) → (B, 4·planes, H/stride, W/stride)
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

/// ResNet: conv1 → bn1 → relu → maxpool → layer1..layer4 → global average pool → fc. Names and
/// shapes equal torchvision.models.resnetN's (conv1.weight, layer1.0.conv1.weight,
/// layer2.0.downsample.0.weight, layer2.0.downsample.1.running_mean, fc.weight, ...), so
/// torchvision's pretrained weights load unchanged.
class ResNetImpl : public torch::nn::Module {
 public:
  explicit ResNetImpl(const ResNetOptions& options = {});
  /// (B, in_channels, H, W) → logits (B, num_classes)
  at::Tensor forward(const at::Tensor& x);
  /// (B, in_channels, H, W) → pooled features (B, 512 · expansion), before fc.
  at::Tensor forward_features(const at::Tensor& x);
  void reset();

  ResNetOptions options;
  torch::nn::Conv2d conv1{nullptr};
  BatchNorm2d bn1{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  /// One stage (layerN) block by block, each named in profiles (block_names_ from `first`) and
  /// checkpointed when gradient_checkpointing applies.
  at::Tensor run_stage(torch::nn::Sequential& stage, at::Tensor h, size_t first);
  std::vector<std::string> block_names_;  ///< "layer1.0", "layer1.1", ..., in forward order
};
TORCH_MODULE(ResNet);

}  // namespace lathe::models
