// GradScaler on ATen's autocast state and _amp_* kernels.
#include "lathe/train/amp.h"

#include <map>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/optim/optimizer.h>

#include "lathe/core/error.h"
#include "lathe/optim/fused_adamw.h"

namespace lathe::train {

GradScaler::GradScaler(bool enabled, double init_scale, double growth_factor,
                       double backoff_factor, int64_t growth_interval)
    : enabled_(enabled),
      growth_factor_(growth_factor),
      backoff_factor_(backoff_factor),
      growth_interval_(growth_interval),
      init_scale_(init_scale) {}

at::Tensor GradScaler::scale(const at::Tensor& loss) {
  if (!enabled_) return loss;
  if (!scale_.defined() || scale_.device() != loss.device()) {
    const double s = scale_.defined() ? scale_.item<double>() : init_scale_;
    const int64_t g = growth_tracker_.defined() ? growth_tracker_.item<int64_t>() : 0;
    scale_ = at::full({}, s, loss.options().dtype(at::kFloat));
    growth_tracker_ = at::full({}, g, loss.options().dtype(at::kInt));
  }
  return loss * scale_.to(loss.scalar_type());
}

void GradScaler::check_grads(torch::optim::Optimizer& optimizer, const at::Tensor& inv_scale) {
  found_inf_ = at::zeros({}, scale_.options());
  // The kernel wants the gradients of one call to share a dtype: one call per dtype (all are
  // on the scale's device in a single-device run).
  std::map<c10::ScalarType, std::vector<at::Tensor>> by_dtype;
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params())
      if (p.grad().defined()) by_dtype[p.grad().scalar_type()].push_back(p.grad());
  for (auto& [dtype, grads] : by_dtype)
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf_, inv_scale);
}

void GradScaler::unscale(torch::optim::Optimizer& optimizer) {
  if (!enabled_ || unscaled_ || !scale_.defined()) return;
  check_grads(optimizer, scale_.to(at::kDouble).reciprocal().to(at::kFloat));
  unscaled_ = true;
}

void GradScaler::step(torch::optim::Optimizer& optimizer) {
  if (!enabled_ || !scale_.defined()) {
    optimizer.step();
    return;
  }
  auto* fused = dynamic_cast<optim::FusedAdamW*>(&optimizer);
  if (fused != nullptr && device_skip_.value_or(scale_.is_cuda())) {
    // torch's GradScaler with a fused optimizer: look for inf/NaN without unscaling (×1), and
    // let the kernel divide by the scale; unscaled gradients (after clipping) only need the flag.
    if (!unscaled_) check_grads(optimizer, at::ones({}, scale_.options()));
    fused->set_amp(unscaled_ ? at::Tensor() : scale_, found_inf_);
    optimizer.step();
  } else {
    unscale(optimizer);
    if (found_inf_.item<float>() == 0.0f) optimizer.step();
  }
  skipped_ = skipped_.defined() ? skipped_ + found_inf_ : found_inf_.clone();
}

void GradScaler::update() {
  if (!enabled_ || !scale_.defined()) return;
  const at::Tensor found = found_inf_.defined() ? found_inf_ : at::zeros({}, scale_.options());
  at::_amp_update_scale_(scale_, growth_tracker_, found, growth_factor_, backoff_factor_,
                         growth_interval_);
  unscaled_ = false;
  found_inf_ = at::Tensor();
}

int64_t GradScaler::skipped_steps() const {
  return skipped_.defined() ? static_cast<int64_t>(skipped_.item<float>()) : 0;
}

GradScaler::State GradScaler::state() const {
  if (!scale_.defined()) return {init_scale_, 0};
  return {scale_.item<double>(), growth_tracker_.item<int64_t>()};
}

void GradScaler::set_state(const State& s) {
  init_scale_ = s.scale;
  scale_ = at::full({}, s.scale, at::kFloat);
  growth_tracker_ = at::full({}, s.growth_tracker, at::kInt);
}

}  // namespace lathe::train
