// checkpointed(): a torch::autograd::Function that saves the input, the RNG and autocast states
// in forward and recomputes the piece with gradients in backward.
#include "models/checkpoint.h"

#include <optional>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <atomic>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/custom_class.h>

#include "lathe/core/autocast.h"

namespace lathe::models {
namespace {

std::atomic<int64_t> recording_calls{0};

/// What backward needs besides the input: the function and the states to recompute it under.
struct Recompute : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> fn;
  std::vector<at::Tensor> preserved;  ///< restored after the recompute (BatchNorm statistics)
  c10::Device device{c10::kCPU};
  at::Tensor cpu_rng;     ///< the CPU generator's state when forward ran
  at::Tensor device_rng;  ///< the input device's generator state (CUDA), when not the CPU
  bool autocast = false;
  c10::ScalarType autocast_dtype = at::kFloat;
};

/// Sets the default generator of `device` to `state` for the guard's lifetime.
class RngFork {
 public:
  RngFork(c10::Device device, const at::Tensor& state)
      : gen_(at::globalContext().defaultGenerator(device)) {
    if (!state.defined()) return;
    std::lock_guard<std::mutex> lock(gen_.mutex());
    saved_ = gen_.get_state();
    gen_.set_state(state);
  }
  ~RngFork() {
    if (!saved_.defined()) return;
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_state(saved_);
  }
  RngFork(const RngFork&) = delete;
  RngFork& operator=(const RngFork&) = delete;

 private:
  at::Generator gen_;
  at::Tensor saved_;
};

at::Tensor rng_state(c10::Device device) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

struct CheckpointFunction : torch::autograd::Function<CheckpointFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            c10::intrusive_ptr<Recompute> r) {
    ctx->save_for_backward({x});
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(r);
    return r->fn(x);  // grad mode is off here: no activations are kept
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    auto r =
        c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["recompute"].toCapsule());
    const at::Tensor input = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::Tensor y;
    std::vector<at::Tensor> before;  // the preserved tensors as the forward left them
    {
      torch::NoGradGuard no_grad;
      for (const auto& t : r->preserved) before.push_back(t.clone());
    }
    {
      RngFork cpu(c10::Device(c10::kCPU), r->cpu_rng);
      std::optional<RngFork> dev;
      if (r->device_rng.defined()) dev.emplace(r->device, r->device_rng);
      // Autocast as in the forward, as a region of its own: its cast cache is cleared when the
      // recompute ends, so no low-precision copy of these weights outlives the optimizer step.
      AutocastGuard amp(r->device.type(), r->autocast_dtype, r->autocast);
      torch::AutoGradMode grad(true);
      y = r->fn(input);
    }
    // Parameters' gradients accumulate here; the input's comes back to the outer graph.
    torch::autograd::backward({y}, {grads[0]});
    {
      // After the backward: the recomputed graph saved these (BatchNorm keeps its running
      // statistics), so an in-place restore before it would fail autograd's version check.
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < before.size(); ++i) r->preserved[i].copy_(before[i]);
    }
    return {input.grad(), at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpointed(std::function<at::Tensor(const at::Tensor&)> fn, const at::Tensor& x,
                        std::vector<at::Tensor> preserved) {
  if (!at::GradMode::is_enabled() || !x.requires_grad()) return fn(x);
  recording_calls.fetch_add(1, std::memory_order_relaxed);
  auto r = c10::make_intrusive<Recompute>();
  r->fn = std::move(fn);
  r->preserved = std::move(preserved);
  r->device = x.device();
  r->cpu_rng = rng_state(c10::Device(c10::kCPU));
  if (!x.device().is_cpu()) r->device_rng = rng_state(x.device());
  r->autocast = at::autocast::is_autocast_enabled(x.device().type());
  r->autocast_dtype = at::autocast::get_autocast_dtype(x.device().type());
  return CheckpointFunction::apply(x, r);
}

int64_t checkpointed_calls() { return recording_calls.load(std::memory_order_relaxed); }

}  // namespace lathe::models
