// MobileNetV2: torchvision's stage table, channel rounding, initialisation and forward pass.
#include "models/cnn/mobilenet.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include "models/batch_norm.h"
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cmath>

#include "lathe/core/error.h"

namespace lathe::models {
namespace {

namespace nn = torch::nn;

/// torchvision's _make_divisible: the nearest multiple of `divisor`, never below 90% of v.
int64_t make_divisible(double v, int64_t divisor) {
  int64_t rounded =
      std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (static_cast<double>(rounded) < 0.9 * v) rounded += divisor;
  return rounded;
}

}  // namespace

ConvBNReLU6Impl::ConvBNReLU6Impl(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                                 int64_t groups) {
  push_back(nn::Conv2d(nn::Conv2dOptions(in, out, kernel)
                           .stride(stride)
                           .padding((kernel - 1) / 2)
                           .groups(groups)
                           .bias(false)));
  push_back(BatchNorm2d(out));
  push_back(nn::ReLU6(/*inplace=*/true));  // as torchvision's Conv2dNormActivation
}

InvertedResidualImpl::InvertedResidualImpl(int64_t in, int64_t out, int64_t stride,
                                           int64_t expand_ratio)
    : use_residual(stride == 1 && in == out) {
  const int64_t hidden = in * expand_ratio;
  conv = nn::Sequential();
  if (expand_ratio != 1) conv->push_back(ConvBNReLU6(in, hidden, 1, 1, 1));
  conv->push_back(ConvBNReLU6(hidden, hidden, 3, stride, hidden));  // depthwise
  conv->push_back(nn::Conv2d(nn::Conv2dOptions(hidden, out, 1).bias(false)));
  conv->push_back(BatchNorm2d(out));
  register_module("conv", conv);
}

at::Tensor InvertedResidualImpl::forward(const at::Tensor& x) {
  at::Tensor y = conv->forward(x);  // (B, out, H/s, W/s)
  return use_residual ? x + y : y;
}

MobileNetV2Impl::MobileNetV2Impl(const MobileNetV2Options& options_) : options(options_) {
  reset();
}

void MobileNetV2Impl::reset() {
  const auto& o = options;
  LATHE_CHECK(o.num_classes() > 0 && o.in_channels() > 0, ModelError,
              "mobilenet_v2: num_classes ({}) and in_channels ({}) must be positive",
              o.num_classes(), o.in_channels());
  LATHE_CHECK(o.width_mult() > 0 && o.round_nearest() > 0, ModelError,
              "mobilenet_v2: width_mult ({}) and round_nearest ({}) must be positive",
              o.width_mult(), o.round_nearest());
  LATHE_CHECK(o.dropout() >= 0 && o.dropout() < 1, ModelError,
              "mobilenet_v2: dropout {} must be in [0, 1)", o.dropout());
  // t (expansion), c (channels), n (blocks), s (first block's stride): torchvision's table.
  static constexpr int64_t kStages[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2},
                                            {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2},
                                            {6, 320, 1, 1}};
  int64_t in = make_divisible(32 * o.width_mult(), o.round_nearest());
  const int64_t last = make_divisible(1280 * std::max(1.0, o.width_mult()), o.round_nearest());

  features = nn::Sequential();
  features->push_back(ConvBNReLU6(o.in_channels(), in, 3, 2, 1));
  for (const auto& [t, c, n, s] : kStages) {
    const int64_t out = make_divisible(static_cast<double>(c) * o.width_mult(), o.round_nearest());
    for (int64_t i = 0; i < n; ++i) {
      features->push_back(InvertedResidual(in, out, i == 0 ? s : 1, t));
      in = out;
    }
  }
  features->push_back(ConvBNReLU6(in, last, 1, 1, 1));
  register_module("features", features);
  classifier = register_module(
      "classifier", nn::Sequential(nn::Dropout(o.dropout()), nn::Linear(last, o.num_classes())));

  // torchvision's initialisation: Kaiming-normal convs (fan_out), BN 1/0, Linear N(0, 0.01)/0.
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut);
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(bn->weight);
      nn::init::zeros_(bn->bias);
    } else if (auto* fc = m->as<nn::Linear>()) {
      nn::init::normal_(fc->weight, 0.0, 0.01);
      nn::init::zeros_(fc->bias);
    }
  }
}

at::Tensor MobileNetV2Impl::forward(const at::Tensor& x) {
  LATHE_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(), ModelError,
              "mobilenet_v2: expected input (B, {}, H, W), got {}", options.in_channels(),
              x.sizes());
  at::Tensor h = features->forward(x);                     // (B, C, H/32, W/32)
  h = at::flatten(at::adaptive_avg_pool2d(h, {1, 1}), 1);  // (B, C)
  return classifier->forward(h);                           // (B, num_classes)
}

}  // namespace lathe::models
