// CudaGraphStep on at::cuda::CUDAGraph: warm-up on a side stream, capture with the autocast cache
// off, replay with static inputs; without CUDA headers or devices every step runs eagerly.
#include "lathe/train/cuda_graph.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/Event.h>

#include <tuple>
#if __has_include(<cuda_runtime_api.h>)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define LATHE_CUDA_HEADERS 1
#endif
#include <torch/cuda.h>

#include "lathe/core/log.h"

namespace lathe::train {

namespace {
#ifdef LATHE_CUDA_HEADERS
/// `waiter` runs its later work only after what is queued on `on` so far.
void wait(const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& on) {
  c10::Event done(c10::DeviceType::CUDA);
  done.record(on.unwrap());
  done.block(waiter.unwrap());
}
#endif

bool same_signature(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.device() == b.device() &&
         a.strides() == b.strides();
}
}  // namespace

struct CudaGraphStep::Graph {
#ifdef LATHE_CUDA_HEADERS
  at::cuda::CUDAGraph graph;
#endif
  at::Tensor x, y;          ///< static inputs the graph reads
  at::Tensor output, loss;  ///< static outputs it writes
};

std::string cuda_graph_blocker(const GraphStepTraits& t, c10::Device device) {
  if (t.distributed) return "distributed training all-reduces gradients between backward and the step";
  if (t.accumulate_grad_batches != 1) return "trainer.accumulate_grad_batches is not 1";
  if (t.fp16_scaler) return "fp16's gradient scaler keeps host-side state between steps";
  if (!t.fused_adamw)
    return "the optimizer is not the fused adamw (optim.name adamw, optim.fused auto or true)";
  if (t.scheduled_momentum_or_decay)
    return "momentum / weight decay schedules change values a graph records";
  if (t.weight_penalty) return "the model adds a weight penalty";
  if (t.recomputes)
    return "activation checkpointing (model.gradient_checkpointing) recomputes in backward and "
           "reads the CUDA generator's seed there";
  if (!t.callback.empty()) return t.callback;
  return CudaGraphStep::unsupported_reason(device);
}

CudaGraphStep::CudaGraphStep(int64_t warmup_steps) : warmup_steps_(warmup_steps) {}
CudaGraphStep::~CudaGraphStep() = default;

bool CudaGraphStep::captured() const { return graph_ != nullptr; }

std::string CudaGraphStep::unsupported_reason(c10::Device device) {
#ifdef LATHE_CUDA_HEADERS
  if (!device.is_cuda()) return fmt::format("the device is {}, not CUDA", device.str());
  if (!torch::cuda::is_available()) return "no CUDA device is available";
  return {};
#else
  (void)device;
  return "this build of lathe has no CUDA headers";
#endif
}

CudaGraphStep::Result CudaGraphStep::run(const at::Tensor& x, const at::Tensor& y, const Fn& fn) {
  ++calls_;
  if (graph_) {
    if (!same_signature(x, graph_->x) || !same_signature(y, graph_->y)) {
      ++fallbacks_;
      auto [out, loss] = fn(x, y);
      return {out, loss, GraphMode::Eager, {}};
    }
#ifdef LATHE_CUDA_HEADERS
    graph_->x.copy_(x, /*non_blocking=*/true);
    graph_->y.copy_(y, /*non_blocking=*/true);
    graph_->graph.replay();
    ++replays_;
    return {graph_->output, graph_->loss, GraphMode::Replayed, {}};
#endif
  }
#ifdef LATHE_CUDA_HEADERS
  if (x.is_cuda() && torch::cuda::is_available()) {
    const c10::DeviceIndex dev = x.device().index();
    const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(dev);
    const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, dev);
    if (calls_ <= warmup_steps_) {  // warm-up on a side stream, as torch.cuda.graphs advises
      wait(side, compute);
      Result r;
      {
        c10::cuda::CUDAStreamGuard on_side(side);
        std::tie(r.output, r.loss) = fn(x, y);
      }
      wait(compute, side);
      return r;
    }
    if (before_capture_) before_capture_();
    auto g = std::make_unique<Graph>();
    g->x = x.clone();  // the static inputs, strides kept
    g->y = y.clone();
    wait(side, compute);
    std::string error;
    {
      c10::cuda::CUDAStreamGuard on_side(side);
      // Casts cached by autocast would be graph memory reused across replays: off while recording.
      const bool cache = at::autocast::is_autocast_cache_enabled();
      at::autocast::set_autocast_cache_enabled(false);
      bool capturing = false;
      try {
        // Thread-local capture: loader threads may pin memory meanwhile.
        g->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
        capturing = true;
        std::tie(g->output, g->loss) = fn(g->x, g->y);
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (capturing) {
        try {
          g->graph.capture_end();  // always: a stream left capturing fails every later launch
        } catch (const std::exception& e) {
          if (error.empty()) error = e.what();
        }
      }
      at::autocast::set_autocast_cache_enabled(cache);
    }
    wait(compute, side);
    if (!error.empty()) {
      Result failed;
      failed.mode = GraphMode::Failed;
      failed.error = error;
      return failed;
    }
    g->graph.replay();  // recording ran nothing: this is the step
    graph_ = std::move(g);
    return {graph_->output, graph_->loss, GraphMode::Captured, {}};
  }
#endif
  auto [out, loss] = fn(x, y);
  return {out, loss, GraphMode::Eager, {}};
}

}  // namespace lathe::train
