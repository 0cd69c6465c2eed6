// CudaGraphStep: a static-shape training step recorded once as a CUDA graph and replayed, with an
// eager fallback when shapes change or CUDA is absent.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace lathe::train {

/// How CudaGraphStep::run ran a step.
enum class GraphMode {
  Eager,     ///< fn ran as usual (warm-up, no CUDA, or inputs of other shapes than recorded)
  Captured,  ///< fn was recorded into the graph, which then ran once
  Replayed,  ///< the graph ran; fn's host code did not
  Failed,    ///< fn threw while being recorded: the capture was ended, nothing ran; the
             ///< caller clears what fn touched and runs the step eagerly
};

/// What decides whether a training step can be recorded as a CUDA graph, gathered by the
/// Trainer from its config, optimizer, model and callbacks.
struct GraphStepTraits {
  bool distributed = false;             ///< gradients are all-reduced between backward and step
  int64_t accumulate_grad_batches = 1;  ///< a step spans several micro-batches
  bool fp16_scaler = false;             ///< the gradient scaler keeps host state between steps
  bool fused_adamw = true;              ///< the optimizer advances its state on the device
  bool scheduled_momentum_or_decay = false;  ///< values the graph would record once
  bool weight_penalty = false;               ///< the model adds a penalty to the objective
  bool recomputes = false;  ///< activation checkpointing recomputes in backward (seen in a step)
  std::string callback;     ///< a callback's reason (one that changes what trains), or empty
};

/// Why a step with `traits` cannot be recorded as a CUDA graph on `device` (empty when it can).
/// The step's own reasons come before the device's, so that they can be checked on the CPU.
///
///   if (auto why = cuda_graph_blocker(traits, device); !why.empty()) log::warn("{}", why);
std::string cuda_graph_blocker(const GraphStepTraits& traits, c10::Device device);

/// Records `fn` — forward, loss, backward and optimizer step of one batch, with no host syncs —
/// as a CUDA graph on its first call after `warmup_steps` eager calls, then replays it for
/// inputs of the recorded shapes and dtypes (copied into the graph's static inputs). The tensors
/// returned from a replay are the graph's static outputs: read them before the next run.
/// Optimizer state must advance on the device (lathe::optim::FusedAdamW's capturable mode).
///
///   CudaGraphStep graph;
///   auto [out, loss, mode] = graph.run(x, y, [&](auto& x, auto& y) { ...; return {out, loss}; });
class CudaGraphStep {
 public:
  using Fn = std::function<std::pair<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&)>;
  struct Result {
    at::Tensor output, loss;
    GraphMode mode = GraphMode::Eager;
    std::string error;  ///< GraphMode::Failed: what fn threw
  };

  explicit CudaGraphStep(int64_t warmup_steps = 3);
  ~CudaGraphStep();
  CudaGraphStep(const CudaGraphStep&) = delete;
  CudaGraphStep& operator=(const CudaGraphStep&) = delete;

  /// Whether this build and machine can record CUDA graphs on `device`, else why not.
  static std::string unsupported_reason(c10::Device device);

  Result run(const at::Tensor& x, const at::Tensor& y, const Fn& fn);
  /// Runs right before recording, outside it: create what the recorded step must find
  /// existing (optimizer state, device step counts, lr tensors).
  void set_before_capture(std::function<void()> fn) { before_capture_ = std::move(fn); }
  /// Calls made so far (warm-up included).
  int64_t calls() const { return calls_; }
  int64_t warmup_steps() const { return warmup_steps_; }

  bool captured() const;
  int64_t replays() const { return replays_; }
  /// Eager calls after the graph was recorded, because the inputs' shapes or dtypes differed.
  int64_t fallbacks() const { return fallbacks_; }

 private:
  struct Graph;
  int64_t warmup_steps_;
  int64_t calls_ = 0;
  int64_t replays_ = 0;
  int64_t fallbacks_ = 0;
  std::unique_ptr<Graph> graph_;
  std::function<void()> before_capture_;
};

}  // namespace lathe::train
