// Mixed precision: an RAII autocast region, and the dynamic gradient scaler for fp16.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace torch::optim {
class Optimizer;
}

namespace lathe::train {

/// Autocast on `device` with `dtype` for the guard's lifetime (no-op when !enabled); restores
/// the previous state and clears the cast cache when the outermost region ends.
///
///   { AutocastGuard amp(c10::DeviceType::CUDA, at::kBFloat16, true); out = model(x); }
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, c10::ScalarType dtype, bool enabled);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool enabled_;
  bool prev_enabled_ = false;
  c10::ScalarType prev_dtype_ = c10::kFloat;
};

/// Dynamic loss scaling for fp16 (torch.amp.GradScaler's algorithm, on ATen's _amp_* ops that
/// run on CPU and CUDA): scale the loss, unscale the gradients and look for inf/NaN, skip the
/// step when found, then grow the scale every `growth_interval` clean steps or back off.
///
///   at::Tensor loss = ...; scaler.scale(loss).backward();
///   scaler.unscale(optimizer);      // before clipping
///   bool stepped = scaler.step(optimizer);
///   scaler.update();
class GradScaler {
 public:
  struct State {
    double scale = 65536.0;
    int64_t growth_tracker = 0;
  };

  explicit GradScaler(bool enabled, double init_scale = 65536.0, double growth_factor = 2.0,
                      double backoff_factor = 0.5, int64_t growth_interval = 2000);

  bool enabled() const { return enabled_; }
  /// loss · scale (the loss itself when disabled).
  at::Tensor scale(const at::Tensor& loss);
  /// Divides every gradient by the scale and records whether any is inf/NaN (once per step).
  void unscale(torch::optim::Optimizer& optimizer);
  /// Steps the optimizer unless the gradients held inf/NaN; returns whether it stepped.
  bool step(torch::optim::Optimizer& optimizer);
  /// Adjusts the scale for the next step.
  void update();

  State state() const;
  void set_state(const State& s);
  /// How many steps were skipped because of inf/NaN gradients.
  int64_t skipped_steps() const { return skipped_; }

 private:
  bool enabled_;
  double growth_factor_, backoff_factor_;
  int64_t growth_interval_;
  at::Tensor scale_;           ///< () float32 on the gradients' device
  at::Tensor growth_tracker_;  ///< () int32
  at::Tensor found_inf_;       ///< () float32
  bool unscaled_ = false;
  int64_t skipped_ = 0;
  double init_scale_;
};

}  // namespace lathe::train
