// AutocastGuard and GradScaler on ATen's autocast state and _amp_* kernels.
#include "lathe/train/amp.h"

#include <map>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/optim/optimizer.h>

#include "lathe/core/error.h"

namespace lathe::train {

AutocastGuard::AutocastGuard(c10::DeviceType device, c10::ScalarType dtype, bool enabled)
    : device_(device), enabled_(enabled) {
  if (!enabled_) return;
  prev_enabled_ = at::autocast::is_autocast_enabled(device_);
  prev_dtype_ = at::autocast::get_autocast_dtype(device_);
  at::autocast::set_autocast_enabled(device_, true);
  at::autocast::set_autocast_dtype(device_, dtype);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_, prev_enabled_);
  at::autocast::set_autocast_dtype(device_, prev_dtype_);
}

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

void GradScaler::unscale(torch::optim::Optimizer& optimizer) {
  if (!enabled_ || unscaled_ || !scale_.defined()) return;
  found_inf_ = at::zeros({}, scale_.options());
  const at::Tensor inv_scale = scale_.to(at::kDouble).reciprocal().to(at::kFloat);
  // The kernel wants the gradients of one call to share a dtype: one call per dtype (all are
  // on the scale's device in a single-device run).
  std::map<c10::ScalarType, std::vector<at::Tensor>> by_dtype;
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params())
      if (p.grad().defined()) by_dtype[p.grad().scalar_type()].push_back(p.grad());
  for (auto& [dtype, grads] : by_dtype)
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf_, inv_scale);
  unscaled_ = true;
}

bool GradScaler::step(torch::optim::Optimizer& optimizer) {
  if (!enabled_) {
    optimizer.step();
    return true;
  }
  unscale(optimizer);
  const bool finite = !found_inf_.defined() || found_inf_.item<float>() == 0.0f;
  if (finite) {
    optimizer.step();
  } else {
    ++skipped_;
  }
  return finite;
}

void GradScaler::update() {
  if (!enabled_ || !scale_.defined()) return;
  const at::Tensor found = found_inf_.defined() ? found_inf_ : at::zeros({}, scale_.options());
  at::_amp_update_scale_(scale_, growth_tracker_, found, growth_factor_, backoff_factor_,
                         growth_interval_);
  unscaled_ = false;
  found_inf_ = at::Tensor();
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
