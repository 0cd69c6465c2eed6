// FusedAdamW: torch::optim::AdamW whose step runs ATen's fused multi-tensor kernel
// (at::_fused_adamw_: one launch per device and dtype on CUDA; also implemented on CPU), with a
// capturable mode whose step a CUDA graph can record.
#pragma once

#include <unordered_map>
#include <utility>
#include <vector>

#include <torch/optim/adamw.h>

namespace lathe::optim {

/// Same options, state and serialization as torch::optim::AdamW (checkpoints move freely between
/// the two), with step() done by at::_fused_adamw_ over all parameters of a group at once instead
/// of one small kernel sequence per parameter.
///
///   FusedAdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
///
/// Capturable mode (set_capturable(true)), for CUDA graphs: the step counts and each group's lr
/// live in device tensors that step() reads and advances with device ops only, so a recorded
/// step replays correctly. The lr tensors take the groups' options in sync_hyperparameters(),
/// which the caller runs outside the graph before each step or replay; after a replay (which
/// runs no host code) count_replayed_step() advances the host-side step counts that
/// checkpoints save.
class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  at::Tensor step(LossClosure closure = nullptr) override;

  void set_capturable(bool on) { capturable_ = on; }
  bool capturable() const { return capturable_; }
  /// Capturable mode: copies each group's lr into its device tensor, and re-reads the step
  /// counts when a loaded state changed them.
  void sync_hyperparameters();
  /// Capturable mode: one step happened on the device without step() running on the host.
  void count_replayed_step();

  /// Mixed precision without a host sync (torch's GradScaler with a fused optimizer): the next
  /// step() divides the gradients by `grad_scale` inside the kernel (undefined: they are already
  /// unscaled) and, where `found_inf` (() float32 on the parameters' device) is non-zero,
  /// leaves parameters, moments and step counts as they were. Applies to one step.
  void set_amp(at::Tensor grad_scale, at::Tensor found_inf);
  /// Host step counts from the device counts, which skipped steps (found_inf) left behind: one
  /// device sync. Run before serialising the state.
  void sync_host_steps();
  /// Creates the state of every parameter that trains (moments, device step counts) now. Run it
  /// before a CUDA graph records step(): tensors first made during the recording would be
  /// re-made — zeroed — by every replay.
  void init_state();
  /// While on, step() refuses (TrainError) to create state for a parameter that has none:
  /// set around a recorded step, after init_state().
  void freeze_state(bool on) { state_frozen_ = on; }

 private:
  struct DeviceSteps {
    at::Tensor step;    ///< () float32 beside the parameter: the count the kernel reads
    int64_t host = -1;  ///< the host count it was last filled from
  };
  /// The state and device step count of `p`, created when missing (unless frozen).
  std::pair<torch::optim::AdamWParamState*, at::Tensor*> state_of(const at::Tensor& p);

  bool capturable_ = false;
  bool state_frozen_ = false;
  at::Tensor grad_scale_, found_inf_;  ///< set_amp(), for the next step only
  std::unordered_map<void*, DeviceSteps> device_steps_;  ///< by parameter TensorImpl
  std::vector<at::Tensor> lr_;                           ///< () per group, capturable mode
};

}  // namespace lathe::optim
