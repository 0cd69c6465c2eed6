// ConvNet: construction of the stages and head, and the forward pass.
#include "models/cnn/convnet.h"

#include <torch/nn/modules/activation.h>
#include "models/batch_norm.h"
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include "lathe/core/error.h"
#include "lathe/core/profile_scope.h"

namespace lathe::models {

ConvNetImpl::ConvNetImpl(const ConvNetOptions& options_) : options(options_) { reset(); }

void ConvNetImpl::reset() {
  namespace nn = torch::nn;
  const auto& o = options;
  LATHE_CHECK(!o.channels().empty(), ModelError, "convnet: channels must list at least one stage");
  LATHE_CHECK(o.in_channels() > 0 && o.num_classes() > 0 && o.hidden() > 0, ModelError,
              "convnet: in_channels ({}), num_classes ({}) and hidden ({}) must be positive",
              o.in_channels(), o.num_classes(), o.hidden());
  LATHE_CHECK(o.dropout() >= 0 && o.dropout() < 1, ModelError,
              "convnet: dropout {} must be in [0, 1)", o.dropout());
  const int64_t stages = static_cast<int64_t>(o.channels().size());
  const int64_t side = o.image_size() >> stages;
  LATHE_CHECK(side >= 1, ModelError,
              "convnet: image_size {} is too small for {} pooling stages (each halves it)",
              o.image_size(), stages);

  features = nn::Sequential();
  int64_t in = o.in_channels();
  for (int64_t out : o.channels()) {
    LATHE_CHECK(out > 0, ModelError, "convnet: channel counts must be positive, got {}", out);
    features->push_back(nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1).bias(false)));
    features->push_back(BatchNorm2d(out));
    features->push_back(nn::ReLU(/*inplace=*/true));  // as torchvision: BN's backward reads its input
    features->push_back(nn::MaxPool2d(2));
    in = out;
  }
  classifier = nn::Sequential(nn::Flatten(), nn::Dropout(o.dropout()),
                              nn::Linear(in * side * side, o.hidden()), nn::ReLU(/*inplace=*/true),
                              nn::Dropout(o.dropout()), nn::Linear(o.hidden(), o.num_classes()));
  register_module("features", features);
  register_module("classifier", classifier);
}

at::Tensor ConvNetImpl::forward(const at::Tensor& x) {
  LATHE_CHECK(x.dim() == 4 && x.size(1) == options.in_channels() &&
                  x.size(2) == options.image_size() && x.size(3) == options.image_size(),
              ModelError, "convnet: expected input (B, {}, {}, {}), got {}",
              options.in_channels(), options.image_size(), options.image_size(), x.sizes());
  at::Tensor h;  // (B, C_last, H / 2^stages, W / 2^stages)
  {
    const ProfileScope scope("features");
    h = features->forward(x);
  }
  const ProfileScope scope("classifier");
  return classifier->forward(h);  // (B, num_classes)
}

}  // namespace lathe::models
