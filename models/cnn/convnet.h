// ConvNet: a small CNN for 28×28 / 32×32 images (conv-BN-ReLU-pool stages, then an MLP head).
#pragma once

#include <cstdint>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

namespace lathe::models {

/// Options of ConvNet.
///
///   ConvNet net(ConvNetOptions().in_channels(1).num_classes(10).channels({32, 64}));
struct ConvNetOptions {
  TORCH_ARG(int64_t, in_channels) = 1;
  TORCH_ARG(int64_t, num_classes) = 10;
  TORCH_ARG(int64_t, image_size) = 28;          ///< input height = width
  TORCH_ARG(std::vector<int64_t>, channels) = std::vector<int64_t>{32, 64};  ///< one per stage
  TORCH_ARG(int64_t, hidden) = 128;             ///< width of the head's hidden layer
  TORCH_ARG(double, dropout) = 0.25;
};

/// Each stage is Conv2d(3×3, pad 1, no bias) → BatchNorm2d → ReLU → MaxPool2d(2); the head is
/// Flatten → Dropout → Linear(hidden) → ReLU → Dropout → Linear(num_classes). State-dict names
/// equal PyTorch's for the same nn.Sequential layout: features.{4s}.weight,
/// features.{4s+1}.running_mean, ..., classifier.2.weight, classifier.5.weight.
class ConvNetImpl : public torch::nn::Module {
 public:
  explicit ConvNetImpl(const ConvNetOptions& options = {});
  /// (B, C, H, W) → logits (B, num_classes)
  at::Tensor forward(const at::Tensor& x);
  void reset();

  ConvNetOptions options;
  torch::nn::Sequential features{nullptr};
  torch::nn::Sequential classifier{nullptr};
};
TORCH_MODULE(ConvNet);

}  // namespace lathe::models
