// ModelEma: an exponential moving average of a model's weights with timm's ModelEmaV3 semantics,
// updated in one fused multi-tensor kernel per step and swapped into the model for evaluation.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/config/config.h"

namespace torch::nn {
class Module;
}

namespace lathe::train {

/// Named tensors in the model's state-dict order (parameters, then buffers).
using NamedTensorList = std::vector<std::pair<std::string, at::Tensor>>;

/// The moving average of every parameter and buffer of one model (the state dict's tensors, so
/// its state() saves as a weights file of that model). It starts as a copy of the model's
/// current weights. After each optimizer step, update(step) does what timm's
/// `ModelEmaV3.update(model, step)` does (config::EmaSection gives the decay): floating-point
/// tensors are interpolated with one at::_foreach_lerp_ over all of them (buffers too unless
/// `buffers: copy`), the others (BatchNorm's num_batches_tracked) copied with one _foreach_copy_.
///
///   ModelEma ema(cfg.trainer.ema, *model.ptr());
///   optimizer.step(); ema.update(++step);
///   { ModelEma::Swap swap(ema); evaluate(...); }  // the model holds the EMA weights meanwhile
class ModelEma {
 public:
  ModelEma(config::EmaSection cfg, torch::nn::Module& model);

  /// timm's get_decay(step): 0 until step > update_after_step + 1, then the (warmed-up) decay.
  double decay_at(int64_t step) const;
  /// Moves the average towards the model's weights after optimizer step `step` (1-based).
  void update(int64_t step);

  /// The averaged tensors by state-dict name, copied to the CPU.
  NamedTensorList state() const;
  /// Sets the average from `tensors` (names, shapes and dtypes as state() gives them); a
  /// mismatch is an std::invalid_argument naming the tensor.
  void load_state(const NamedTensorList& tensors);
  const config::EmaSection& config() const { return cfg_; }

  /// Puts the EMA tensors into the model's parameters and buffers (no copy: their storages are
  /// exchanged) for its lifetime; the model's own come back when it ends.
  class Swap {
   public:
    explicit Swap(ModelEma& ema);
    ~Swap();
    Swap(const Swap&) = delete;
    Swap& operator=(const Swap&) = delete;

   private:
    void exchange();
    ModelEma& ema_;
  };

 private:
  config::EmaSection cfg_;
  std::vector<std::string> names_;
  std::vector<at::Tensor> model_;  ///< the model's parameters and buffers (shared, not copies)
  std::vector<at::Tensor> ema_;    ///< their averages, same devices, dtypes and layouts
  std::vector<at::Tensor> model_lerp_, ema_lerp_;  ///< the interpolated subset
  std::vector<at::Tensor> model_copy_, ema_copy_;  ///< the copied subset
};

}  // namespace lathe::train
