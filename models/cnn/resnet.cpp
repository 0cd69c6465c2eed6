// ResNet: torchvision's blocks, stages, initialisation and forward pass.
#include "models/cnn/resnet.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include "lathe/core/error.h"
#include "lathe/core/profile_scope.h"
#include "models/checkpoint.h"

namespace lathe::models {
namespace {

namespace nn = torch::nn;

nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}
nn::Conv2d conv1x1(int64_t in, int64_t out, int64_t stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 1).stride(stride).bias(false));
}

/// downsample.0 (1×1 conv, stride) and downsample.1 (BN) when the block changes shape.
nn::Sequential make_downsample(int64_t in, int64_t out, int64_t stride) {
  if (stride == 1 && in == out) return nullptr;
  return nn::Sequential(conv1x1(in, out, stride), BatchNorm2d(out));
}

}  // namespace

BasicBlockImpl::BasicBlockImpl(int64_t in, int64_t planes, int64_t stride)
    : conv1(register_module("conv1", conv3x3(in, planes, stride))),
      conv2(register_module("conv2", conv3x3(planes, planes, 1))),
      bn1(register_module("bn1", BatchNorm2d(planes))),
      bn2(register_module("bn2", BatchNorm2d(planes))),
      downsample(make_downsample(in, planes, stride)) {
  if (downsample) register_module("downsample", downsample);
}

// In place where torchvision is (`relu(inplace=True)`, `out += identity`): batch norm's backward
// reads its input, not its output, and relu's reads its result, so autograd allows it, and each
// block allocates and streams two activations fewer.
at::Tensor BasicBlockImpl::forward(const at::Tensor& x) {
  at::Tensor out = bn1(conv1(x)).relu_();  // (B, planes, H/s, W/s)
  out = bn2(conv2(out));
  out += downsample ? downsample->forward(x) : x;
  return out.relu_();
}

BottleneckImpl::BottleneckImpl(int64_t in, int64_t planes, int64_t stride,
                               int64_t width_per_group) {
  const int64_t width = planes * width_per_group / 64;
  conv1 = register_module("conv1", conv1x1(in, width, 1));
  bn1 = register_module("bn1", BatchNorm2d(width));
  conv2 = register_module("conv2", conv3x3(width, width, stride));
  bn2 = register_module("bn2", BatchNorm2d(width));
  conv3 = register_module("conv3", conv1x1(width, planes * 4, 1));
  bn3 = register_module("bn3", BatchNorm2d(planes * 4));
  downsample = make_downsample(in, planes * 4, stride);
  if (downsample) register_module("downsample", downsample);
}

at::Tensor BottleneckImpl::forward(const at::Tensor& x) {
  at::Tensor out = bn1(conv1(x)).relu_();  // (B, width, H, W), in place as BasicBlock
  out = bn2(conv2(out)).relu_();           // (B, width, H/s, W/s)
  out = bn3(conv3(out));                   // (B, 4·planes, H/s, W/s)
  out += downsample ? downsample->forward(x) : x;
  return out.relu_();
}

ResNetImpl::ResNetImpl(const ResNetOptions& options_) : options(options_) { reset(); }

void ResNetImpl::reset() {
  const auto& o = options;
  std::vector<int64_t> layers = o.layers();
  bool bottleneck = false;
  switch (o.depth()) {
    case 18:
      layers = layers.empty() ? std::vector<int64_t>{2, 2, 2, 2} : layers;
      break;
    case 34:
      layers = layers.empty() ? std::vector<int64_t>{3, 4, 6, 3} : layers;
      break;
    case 50:
      layers = layers.empty() ? std::vector<int64_t>{3, 4, 6, 3} : layers;
      bottleneck = true;
      break;
    case 101:
      layers = layers.empty() ? std::vector<int64_t>{3, 4, 23, 3} : layers;
      bottleneck = true;
      break;
    case 152:
      layers = layers.empty() ? std::vector<int64_t>{3, 8, 36, 3} : layers;
      bottleneck = true;
      break;
    default:
      throw ModelError(
          fmt::format("resnet: depth {} is not one of 18, 34, 50, 101, 152", o.depth()));
  }
  LATHE_CHECK(layers.size() == 4, ModelError,
              "resnet: layers must give 4 stages (blocks per stage), got {}", layers.size());
  for (int64_t n : layers)
    LATHE_CHECK(n >= 1, ModelError, "resnet: every stage needs at least one block, got {}", n);
  LATHE_CHECK(o.num_classes() > 0 && o.in_channels() > 0, ModelError,
              "resnet: num_classes ({}) and in_channels ({}) must be positive", o.num_classes(),
              o.in_channels());
  LATHE_CHECK(o.width_per_group() > 0 && o.width_per_group() % 16 == 0, ModelError,
              "resnet: width_per_group {} must be a positive multiple of 16", o.width_per_group());
  LATHE_CHECK(bottleneck || o.width_per_group() == 64, ModelError,
              "resnet: width_per_group {} needs bottleneck blocks (depth 50, 101 or 152)",
              o.width_per_group());

  conv1 =
      o.small_input()
          ? nn::Conv2d(nn::Conv2dOptions(o.in_channels(), 64, 3).stride(1).padding(1).bias(false))
          : nn::Conv2d(nn::Conv2dOptions(o.in_channels(), 64, 7).stride(2).padding(3).bias(false));
  register_module("conv1", conv1);
  bn1 = register_module("bn1", BatchNorm2d(64));

  const int64_t expansion = bottleneck ? 4 : 1;
  int64_t in = 64;
  const auto stage = [&](int64_t planes, int64_t blocks, int64_t stride) {
    nn::Sequential seq;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t s = b == 0 ? stride : 1;
      if (bottleneck)
        seq->push_back(Bottleneck(in, planes, s, o.width_per_group()));
      else
        seq->push_back(BasicBlock(in, planes, s));
      in = planes * expansion;
    }
    return seq;
  };
  layer1 = register_module("layer1", stage(64, layers[0], 1));
  layer2 = register_module("layer2", stage(128, layers[1], 2));
  layer3 = register_module("layer3", stage(256, layers[2], 2));
  layer4 = register_module("layer4", stage(512, layers[3], 2));
  fc = register_module("fc", nn::Linear(512 * expansion, o.num_classes()));
  block_names_.clear();  // "layer1.0", ...: the profiler's names, made once
  for (size_t s = 0; s < layers.size(); ++s)
    for (int64_t b = 0; b < layers[s]; ++b)
      block_names_.push_back(fmt::format("layer{}.{}", s + 1, b));

  // torchvision's initialisation: Kaiming-normal convs (fan_out, relu), BN weight 1 bias 0.
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::Conv2d>())
      nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(bn->weight);
      nn::init::zeros_(bn->bias);
    }
  }
  if (o.zero_init_residual()) {
    for (auto& m : modules(false)) {
      if (auto* b = m->as<BasicBlock>()) nn::init::zeros_(b->bn2->weight);
      if (auto* b = m->as<Bottleneck>()) nn::init::zeros_(b->bn3->weight);
    }
  }
}

namespace {

/// `h` in the memory format of the convolution weight that reads it next. On the CPU the trainer
/// may hold the early stages' weights channels-last and the late ones' NCHW
/// (models::channels_last_parts_on_cpu); the activation follows at each stage boundary. With all
/// weights in one format (the usual case) nothing is converted and nothing enters a trace.
at::Tensor in_layout_of(const at::Tensor& h, const at::Tensor& weight) {
  const at::MemoryFormat format = weight.suggest_memory_format();
  return h.is_contiguous(format) ? h : h.contiguous(format);
}

/// The first convolution weight of a stage (its first block's conv1).
const at::Tensor& first_weight(const torch::nn::Sequential& stage) {
  const auto& block = stage->ptr(0);
  if (const auto* b = block->as<BasicBlock>()) return b->conv1->weight;
  return block->as<Bottleneck>()->conv1->weight;
}

}  // namespace

at::Tensor ResNetImpl::forward_features(const at::Tensor& x) {
  LATHE_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(), ModelError,
              "resnet{}: expected input (B, {}, H, W), got {}", options.depth(),
              options.in_channels(), x.sizes());
  at::Tensor h;
  {
    const ProfileScope scope("stem");
    h = bn1(conv1(in_layout_of(x, conv1->weight))).relu_();  // (B, 64, H/2, W/2), or (B, 64, H, W)
    if (!options.small_input()) h = at::max_pool2d(h, {3, 3}, {2, 2}, {1, 1});  // (B, 64, H/4, W/4)
  }
  size_t first = 0;  // index of the stage's first block in block_names_
  for (auto* stage : {&layer1, &layer2, &layer3, &layer4}) {
    h = run_stage(*stage, in_layout_of(h, first_weight(*stage)), first);  // (B, C, h, w)
    first += (*stage)->size();
  }
  return at::flatten(at::adaptive_avg_pool2d(h, {1, 1}), 1);  // (B, C)
}

at::Tensor ResNetImpl::forward(const at::Tensor& x) {
  const at::Tensor features = forward_features(x);  // (B, C)
  const ProfileScope scope("fc");
  return fc(features);
}

at::Tensor ResNetImpl::run_stage(torch::nn::Sequential& stage, at::Tensor h, size_t first) {
  const bool recompute = options.gradient_checkpointing() && is_training();
  size_t i = first;
  for (torch::nn::AnyModule b : *stage) {  // shares the block
    const ProfileScope scope(block_names_[i++]);
    if (recompute)
      h = checkpointed([b](const at::Tensor& in) mutable { return b.forward(in); }, h,
                       b.ptr()->buffers());
    else
      h = b.forward(h);
  }
  return h;
}

}  // namespace lathe::models
