// ModelEma: timm ModelEmaV3's decay schedule and update (one _foreach_lerp_ per step), state
// for checkpoints, and the zero-copy exchange that evaluates the EMA weights in the model.
#include "lathe/train/ema.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/module.h>

namespace lathe::train {

ModelEma::ModelEma(config::EmaSection cfg, torch::nn::Module& model) : cfg_(std::move(cfg)) {
  torch::NoGradGuard no_grad;
  const auto add = [&](const std::string& name, const at::Tensor& t, bool parameter) {
    names_.push_back(name);
    model_.push_back(t);
    ema_.push_back(t.detach().clone());  // same device, dtype and memory format
    const bool lerp = t.is_floating_point() && (parameter || cfg_.buffers == "average");
    (lerp ? model_lerp_ : model_copy_).push_back(model_.back());
    (lerp ? ema_lerp_ : ema_copy_).push_back(ema_.back());
  };
  // The state dict's order (ckpt::state_dict): parameters, then buffers.
  for (const auto& item : model.named_parameters(/*recurse=*/true))
    add(item.key(), item.value(), true);
  for (const auto& item : model.named_buffers(/*recurse=*/true)) add(item.key(), item.value(), false);
}

double ModelEma::decay_at(int64_t step) const {
  const int64_t n = std::max<int64_t>(0, step - cfg_.update_after_step - 1);
  if (n <= 0) return 0.0;
  if (!cfg_.warmup) return cfg_.decay;
  const double d =
      1.0 - std::pow(1.0 + static_cast<double>(n) / cfg_.warmup_gamma, -cfg_.warmup_power);
  return std::max(std::min(d, cfg_.decay), cfg_.min_decay);
}

void ModelEma::update(int64_t step) {
  torch::NoGradGuard no_grad;
  const double weight = 1.0 - decay_at(step);  // ema + weight · (model − ema)
  if (!ema_lerp_.empty()) at::_foreach_lerp_(ema_lerp_, model_lerp_, weight);
  if (!ema_copy_.empty()) at::_foreach_copy_(ema_copy_, model_copy_);
}

NamedTensorList ModelEma::state() const {
  NamedTensorList out;
  for (size_t i = 0; i < ema_.size(); ++i)
    out.emplace_back(names_[i], ema_[i].detach().to(c10::kCPU, /*non_blocking=*/false,
                                                     /*copy=*/true).contiguous());
  return out;
}

void ModelEma::load_state(const NamedTensorList& tensors) {
  std::vector<std::string> given;
  for (const auto& [name, t] : tensors) given.push_back(name);
  if (given != names_)
    throw std::invalid_argument(fmt::format(
        "the EMA tensors are [{}] but this model's are [{}]", fmt::join(given, ", "),
        fmt::join(names_, ", ")));
  for (size_t i = 0; i < ema_.size(); ++i)
    if (tensors[i].second.sizes() != ema_[i].sizes() ||
        tensors[i].second.scalar_type() != ema_[i].scalar_type())
      throw std::invalid_argument(fmt::format(
          "EMA tensor '{}' is {} [{}] but the model's is {} [{}]", names_[i],
          c10::toString(tensors[i].second.scalar_type()), fmt::join(tensors[i].second.sizes(), ", "),
          c10::toString(ema_[i].scalar_type()), fmt::join(ema_[i].sizes(), ", ")));
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < ema_.size(); ++i) ema_[i].copy_(tensors[i].second);
}

ModelEma::Swap::Swap(ModelEma& ema) : ema_(ema) { exchange(); }

ModelEma::Swap::~Swap() { exchange(); }

void ModelEma::Swap::exchange() {
  // set_data swaps what each tensor holds, not the tensor objects: the optimizer, gradient hooks
  // and the lerp lists keep pointing at the same tensors.
  for (size_t i = 0; i < ema_.model_.size(); ++i) {
    at::Tensor& model = ema_.model_[i];
    at::Tensor& avg = ema_.ema_[i];
    const at::Tensor held = model.data();
    model.set_data(avg.data());
    avg.set_data(held);
  }
}

}  // namespace lathe::train
