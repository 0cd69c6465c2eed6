// Elementwise kernels of the zoo's own: GELU (tanh) forward and backward in one pass, run where
// they time faster than ATen's (lathe/core/kernel_choice.h).
#include "models/kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>

#include "lathe/core/kernel_choice.h"
#include "models/simd.h"

namespace lathe::models {
namespace {

constexpr float kTwoSqrt2OverPi = 1.5957691216057308f;  // 2·√(2/π): sigmoid(2u) = (1 + tanh u) / 2
constexpr float kCubic = 0.044715f;

/// sigmoid(2u) with u = √(2/π) (x + 0.044715 x³): the factor GELU multiplies x by.
[[gnu::always_inline]] inline float gelu_gate(float x) {
  return 1.0f / (1.0f + simd::exp_poly(-kTwoSqrt2OverPi * (x + kCubic * x * x * x)));
}

LATHE_VECTOR_CLONES void gelu_forward_loop(const float* __restrict x, float* __restrict y,
                                           int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * gelu_gate(x[i]);
}

// d/dx [x s] = s + x s (1 − s) · 2√(2/π) (1 + 3·0.044715 x²), s = gelu_gate(x).
LATHE_VECTOR_CLONES void gelu_backward_loop(const float* __restrict grad, const float* __restrict x,
                                            float* __restrict dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i], s = gelu_gate(v);
    dx[i] = grad[i] * (s + v * s * (1.0f - s) * kTwoSqrt2OverPi * (1.0f + 3.0f * kCubic * v * v));
  }
}

constexpr int64_t kGrain = 32768;  // elements per parallel chunk, as ATen's pointwise grain

bool runs_fast_kernel(const at::Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() &&
         x.layout() == at::kStrided && !torch::jit::tracer::isTracing();
}

at::Tensor gelu_tanh_forward(const at::Tensor& x) {  // x: contiguous float32 CPU, any shape
  at::Tensor y = at::empty_like(x);
  const float* in = x.const_data_ptr<float>();
  float* out = y.mutable_data_ptr<float>();
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    gelu_forward_loop(in + begin, out + begin, end - begin);
  });
  return y;
}

at::Tensor gelu_tanh_backward(const at::Tensor& grad, const at::Tensor& x) {
  const at::Tensor g = grad.contiguous();
  at::Tensor dx = at::empty_like(x);
  const float* gp = g.const_data_ptr<float>();
  const float* xp = x.const_data_ptr<float>();
  float* out = dx.mutable_data_ptr<float>();
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    gelu_backward_loop(gp + begin, xp + begin, out + begin, end - begin);
  });
  return dx;
}

struct GeluTanhFunction : torch::autograd::Function<GeluTanhFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    ctx->save_for_backward({x});
    return gelu_tanh_forward(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const at::Tensor& grad = grads[0];
    // create_graph (a gradient penalty): ATen's backward, which is itself differentiable.
    if (at::GradMode::is_enabled() || grad.scalar_type() != at::kFloat)
      return {at::gelu_backward(grad, x, "tanh")};
    return {gelu_tanh_backward(grad, x)};
  }
};

}  // namespace

at::Tensor gelu_tanh(const at::Tensor& x) {
  if (!runs_fast_kernel(x)) return at::gelu(x, "tanh");
  const bool train = x.requires_grad() && at::GradMode::is_enabled();
  // The shape class: the element count rounded up to a power of two, forward or forward + backward.
  const auto n = static_cast<uint64_t>(std::max<int64_t>(1, x.numel()));
  const std::string shape_class =
      fmt::format("n<=2^{} {}", std::bit_width(n - 1), train ? "forward+backward" : "forward");
  const kernels::Side side = kernels::choose("gelu_tanh", shape_class, [&](kernels::Side s) {
    const at::NoGradGuard no_grad;
    const at::Tensor d = x.detach();  // also its own incoming gradient
    if (s == kernels::Side::lathe) {
      gelu_tanh_forward(d);
      if (train) gelu_tanh_backward(d, d);
    } else {
      at::gelu(d, "tanh");
      if (train) at::gelu_backward(d, d, "tanh");
    }
  });
  if (side == kernels::Side::aten) return at::gelu(x, "tanh");
  if (train) return GeluTanhFunction::apply(x);
  return gelu_tanh_forward(x);
}

}  // namespace lathe::models
