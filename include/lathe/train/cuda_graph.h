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
};

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
  };

  explicit CudaGraphStep(int64_t warmup_steps = 3);
  ~CudaGraphStep();
  CudaGraphStep(const CudaGraphStep&) = delete;
  CudaGraphStep& operator=(const CudaGraphStep&) = delete;

  /// Whether this build and machine can record CUDA graphs on `device`, else why not.
  static std::string unsupported_reason(c10::Device device);

  Result run(const at::Tensor& x, const at::Tensor& y, const Fn& fn);

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
};

}  // namespace lathe::train
