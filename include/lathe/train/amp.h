// Mixed precision: the autocast region (from core) and the dynamic gradient scaler for fp16.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

#include "lathe/core/autocast.h"

namespace torch::optim {
class Optimizer;
}

namespace lathe::train {

/// The autocast region (lathe/core/autocast.h), under the name the Trainer's code uses.
using lathe::AutocastGuard;

/// Dynamic loss scaling for fp16 (torch.amp.GradScaler's algorithm, on ATen's _amp_* ops that
/// run on CPU and CUDA): scale the loss, unscale the gradients and look for inf/NaN, skip the
/// step when found, then grow the scale every `growth_interval` clean steps or back off.
/// With lathe's FusedAdamW no step reads a value on the host: the scale and the inf flag go to
/// the fused kernel, which unscales and skips on the device.
///
///   at::Tensor loss = ...; scaler.scale(loss).backward();
///   scaler.unscale(optimizer);      // before clipping
///   scaler.step(optimizer);
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
  /// Steps the optimizer unless the gradients held inf/NaN. On CUDA, FusedAdamW decides on the
  /// device (the scale and the flag go to its kernel); other optimizers, and every optimizer on
  /// the CPU — where reading the flag costs no sync, and the hand-off an extra pass over the
  /// gradients — read the flag on the host, as torch's GradScaler does.
  void step(torch::optim::Optimizer& optimizer);
  /// Forces the device-side hand-off to FusedAdamW on (or off) whatever the device (tests,
  /// benchmarks); by default it is on for CUDA gradients only.
  void set_device_skip(bool on) { device_skip_ = on; }
  /// Adjusts the scale for the next step.
  void update();

  State state() const;
  void set_state(const State& s);
  /// How many steps were skipped because of inf/NaN gradients (reads the device: a sync).
  int64_t skipped_steps() const;

 private:
  /// Looks for inf/NaN in the gradients into found_inf_, multiplying them by `inv_scale`.
  void check_grads(torch::optim::Optimizer& optimizer, const at::Tensor& inv_scale);

  bool enabled_;
  double growth_factor_, backoff_factor_;
  int64_t growth_interval_;
  at::Tensor scale_;           ///< () float32 on the gradients' device
  at::Tensor growth_tracker_;  ///< () int32
  at::Tensor found_inf_;       ///< () float32
  at::Tensor skipped_;         ///< () float32: steps skipped so far, counted on the device
  bool unscaled_ = false;
  std::optional<bool> device_skip_;  ///< unset: on for CUDA gradients
  double init_scale_;
};

}  // namespace lathe::train
