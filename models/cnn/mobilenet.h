// MobileNetV2 with torchvision's architecture and state-dict names.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace lathe::models {

/// Options of MobileNetV2 (torchvision.models.mobilenet_v2's arguments).
///
///   MobileNetV2 net(MobileNetV2Options().num_classes(10).width_mult(0.5));
struct MobileNetV2Options {
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(double, width_mult) = 1.0;    ///< scales every stage's channels
  TORCH_ARG(int64_t, round_nearest) = 8;  ///< channel counts are multiples of this
  TORCH_ARG(double, dropout) = 0.2;       ///< before the classifier's Linear
};

/// torchvision's Conv2dNormActivation with ReLU6: .0 Conv2d (no bias), .1 BatchNorm2d, .2 ReLU6.
/// A Sequential with a plain forward, so that it nests inside other Sequentials.
class ConvBNReLU6Impl : public torch::nn::SequentialImpl {
 public:
  ConvBNReLU6Impl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups);
  /// (B, in, H, W) → (B, out, H/stride, W/stride)
  at::Tensor forward(const at::Tensor& x) { return SequentialImpl::forward(x); }
};
TORCH_MODULE(ConvBNReLU6);

/// torchvision's InvertedResidual: [1×1 expand conv-BN-ReLU6] → 3×3 depthwise conv-BN-ReLU6
/// (stride s) → 1×1 projection conv → BN, with a residual when stride is 1 and in == out.
/// Its layers are `conv.0`, `conv.1`, ... as in torchvision.
class InvertedResidualImpl : public torch::nn::Module {
 public:
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand_ratio);
  /// (B, in, H, W) → (B, out, H/stride, W/stride)
  at::Tensor forward(const at::Tensor& x);

  bool use_residual = false;
  torch::nn::Sequential conv{nullptr};
};
TORCH_MODULE(InvertedResidual);

/// MobileNetV2: features.0 (3×3 stride-2 conv-BN-ReLU6), features.1..17 (inverted residuals),
/// features.18 (1×1 conv-BN-ReLU6 to 1280·max(1, width_mult)), global average pool,
/// classifier.0 (Dropout), classifier.1 (Linear). Names equal torchvision's, so its pretrained
/// weights load unchanged.
class MobileNetV2Impl : public torch::nn::Module {
 public:
  explicit MobileNetV2Impl(const MobileNetV2Options& options = {});
  /// (B, in_channels, H, W) → logits (B, num_classes)
  at::Tensor forward(const at::Tensor& x);
  void reset();

  MobileNetV2Options options;
  torch::nn::Sequential features{nullptr};
  torch::nn::Sequential classifier{nullptr};
};
TORCH_MODULE(MobileNetV2);

}  // namespace lathe::models
