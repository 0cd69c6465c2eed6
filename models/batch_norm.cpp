// BatchNorm2d training kernels for CPU float32 NCHW: per-channel statistics, normalisation, backward.
#include "models/batch_norm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "lathe/core/kernel_choice.h"
#include "models/simd.h"

namespace lathe::models {
namespace {

// An NCHW batch seen as outer × channels × inner floats: (N, C, H·W), a plane per (n, c).
struct Layout {
  int64_t outer = 0, channels = 0, inner = 0;
  int64_t per_channel() const { return outer * inner; }
};

constexpr int64_t kBlock = 4096;  // a plane's floats summed in float before the double total

// Each sum runs in float over blocks of kBlock (vectorised, one partial sum per lane), the
// blocks' sums in double.

LATHE_VECTOR_CLONES double plane_sum(const float* x, int64_t n) {
  double total = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = b; i < e; ++i) s += x[i];
    total += s;
  }
  return total;
}

LATHE_VECTOR_CLONES double plane_sqdev(const float* x, int64_t n, float mean) {  // Σ (x − mean)²
  double total = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = b; i < e; ++i) s += (x[i] - mean) * (x[i] - mean);
    total += s;
  }
  return total;
}

/// Σ dy and Σ dy·(x − mean) over a plane, added to sums[0], sums[1].
LATHE_VECTOR_CLONES void plane_grad_sums(const float* dy, const float* x, int64_t n, float mean,
                                         double* sums) {
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    float sdy = 0, sdyx = 0;
#pragma omp simd reduction(+ : sdy, sdyx)
    for (int64_t i = b; i < e; ++i) {
      sdy += dy[i];
      sdyx += dy[i] * (x[i] - mean);
    }
    sums[0] += sdy;
    sums[1] += sdyx;
  }
}

LATHE_VECTOR_CLONES void plane_affine(const float* x, float* y, int64_t n, float a, float b) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * a + b;
}

LATHE_VECTOR_CLONES void plane_affine2(const float* dy, const float* x, float* dx, int64_t n,
                                       float a, float b, float c) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * a + x[i] * b + c;
}

/// Per-channel mean and biased variance of x (two passes: the mean, then Σ (x − mean)²).
void channel_stats(const float* x, const Layout& l, std::vector<double>& mean,
                   std::vector<double>& var) {
  const int64_t C = l.channels, M = l.per_channel();
  mean.assign(C, 0.0);
  var.assign(C, 0.0);
  std::vector<float> mean_f(C);
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {  // a channel's planes per task
    for (int64_t c = c0; c < c1; ++c) {
      double s = 0;
      for (int64_t o = 0; o < l.outer; ++o) s += plane_sum(x + (o * C + c) * l.inner, l.inner);
      mean[c] = s / M;
      mean_f[c] = static_cast<float>(mean[c]);
      double q = 0;
      for (int64_t o = 0; o < l.outer; ++o)
        q += plane_sqdev(x + (o * C + c) * l.inner, l.inner, mean_f[c]);
      var[c] = q / M;
    }
  });
}

/// out = x·a[c] + b[c] (+ g·e[c] when g is given: the backward's dy·a + x·b + c form).
void channel_affine(const float* x, float* out, const Layout& l, const float* a, const float* b,
                    const float* g = nullptr, const float* e = nullptr) {
  const int64_t C = l.channels;
  at::parallel_for(0, l.outer * C, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {  // plane p = (o, c)
      const int64_t c = p % C, off = p * l.inner;
      if (g)
        plane_affine2(g + off, x + off, out + off, l.inner, e[c], a[c], b[c]);
      else
        plane_affine(x + off, out + off, l.inner, a[c], b[c]);
    }
  });
}

Layout layout_of(const at::Tensor& x) {  // x: contiguous (N, C, H, W)
  return {x.size(0), x.size(1), x.size(2) * x.size(3)};
}

at::Tensor to_float_tensor(const std::vector<double>& v) {
  at::Tensor t = at::empty({static_cast<int64_t>(v.size())}, at::kFloat);
  std::copy(v.begin(), v.end(), t.mutable_data_ptr<float>());
  return t;
}

/// y = (x − mean) · invstd · weight + bias, and in backward dx, dweight, dbias as ATen's
/// native_batch_norm_backward (training): the statistics' dependence on x included.
struct BatchNormFunction : torch::autograd::Function<BatchNormFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias,
                            const at::Tensor& mean, const at::Tensor& invstd, double eps) {
    ctx->save_for_backward({x, weight, mean, invstd});
    ctx->saved_data["eps"] = eps;
    return normalize(x, weight, bias, mean, invstd);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3];
    at::Tensor dx, dweight, dbias;
    if (at::GradMode::is_enabled() || grads[0].scalar_type() != at::kFloat) {
      // create_graph: ATen's backward, which is itself differentiable.
      std::tie(dx, dweight, dbias) = at::native_batch_norm_backward(
          grads[0], x, weight, {}, {}, mean, invstd, /*train=*/true,
          ctx->saved_data["eps"].toDouble(), {true, true, true});
    } else {
      std::tie(dx, dweight, dbias) = backward_kernel(grads[0], x, weight, mean, invstd);
    }
    return {dx, dweight, dbias, at::Tensor(), at::Tensor(), at::Tensor()};
  }

  static at::Tensor normalize(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& mean, const at::Tensor& invstd) {
    const Layout l = layout_of(x);
    std::vector<float> a(l.channels), b(l.channels);  // y = x·a + b per channel
    const float *w = weight.const_data_ptr<float>(), *bi = bias.const_data_ptr<float>();
    const float *m = mean.const_data_ptr<float>(), *s = invstd.const_data_ptr<float>();
    for (int64_t c = 0; c < l.channels; ++c) {
      a[c] = w[c] * s[c];
      b[c] = bi[c] - m[c] * a[c];
    }
    at::Tensor y = at::empty_like(x);  // keeps x's memory format
    channel_affine(x.const_data_ptr<float>(), y.mutable_data_ptr<float>(), l, a.data(), b.data());
    return y;
  }

  // dx = (dy − mean(dy) − (x − mean)·invstd²·mean(dy·(x − mean)))·invstd·weight
  //    = dy·e + x·a + b per channel; dweight = Σ dy·(x − mean)·invstd; dbias = Σ dy.
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_kernel(
      const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mean,
      const at::Tensor& invstd) {
    const at::Tensor dy = grad.contiguous();
    const Layout l = layout_of(x);
    const int64_t C = l.channels;
    const float *px = x.const_data_ptr<float>(), *pdy = dy.const_data_ptr<float>();
    const float *m = mean.const_data_ptr<float>(), *s = invstd.const_data_ptr<float>();
    const float* w = weight.const_data_ptr<float>();
    std::vector<double> sdy(C, 0.0), sdyx(C, 0.0);
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double sums[2] = {0, 0};
        for (int64_t o = 0; o < l.outer; ++o) {
          const int64_t off = (o * C + c) * l.inner;
          plane_grad_sums(pdy + off, px + off, l.inner, m[c], sums);
        }
        sdy[c] = sums[0];
        sdyx[c] = sums[1];
      }
    });
    const double M = static_cast<double>(l.per_channel());
    std::vector<float> e(C), a(C), b(C);
    at::Tensor dweight = at::empty({C}, at::kFloat), dbias = at::empty({C}, at::kFloat);
    for (int64_t c = 0; c < C; ++c) {
      const double scale = static_cast<double>(s[c]) * w[c];     // invstd·weight
      const double k = static_cast<double>(s[c]) * s[c] * sdyx[c] / M;
      e[c] = static_cast<float>(scale);
      a[c] = static_cast<float>(-k * scale);
      b[c] = static_cast<float>((k * m[c] - sdy[c] / M) * scale);
      dweight.mutable_data_ptr<float>()[c] = static_cast<float>(sdyx[c] * s[c]);
      dbias.mutable_data_ptr<float>()[c] = static_cast<float>(sdy[c]);
    }
    at::Tensor dx = at::empty_like(x);
    channel_affine(px, dx.mutable_data_ptr<float>(), l, a.data(), b.data(), pdy, e.data());
    return {dx, dweight, dbias};
  }
};

/// Whether lathe's kernels take this training-mode batch norm: a CPU float32 NCHW-contiguous
/// batch with planes of at least kMinPlane values, affine with running statistics and a
/// momentum, not traced. Channels-last batches run ATen's: its NHWC kernel is vectorised over
/// channels, and lathe's measured barely faster there on one thread and slower on two. Small
/// planes run ATen's too: a call per plane of 16 values (ResNet-18's 4×4 stage) made lathe's
/// slower than ATen's on two threads (bench/kernel_bench).
constexpr int64_t kMinPlane = 64;
bool lathe_kernel_takes(const BatchNorm2dImpl& bn, const at::Tensor& x) {
  const auto& o = bn.options;
  if (!bn.is_training() || !o.affine() || !o.track_running_stats() || !o.momentum()) return false;
  if (x.dim() != 4 || !x.device().is_cpu() || x.scalar_type() != at::kFloat) return false;
  if (x.numel() == 0 || x.size(2) * x.size(3) < kMinPlane) return false;
  if (bn.weight.scalar_type() != at::kFloat || !bn.running_mean.defined()) return false;
  if (torch::jit::tracer::isTracing()) return false;
  return x.is_contiguous();
}

/// The training forward: statistics, running-statistics update (as torch's: momentum, unbiased
/// variance, num_batches_tracked + 1), then the normalisation under autograd.
at::Tensor train_forward(BatchNorm2dImpl& bn, const at::Tensor& x) {
  const Layout l = layout_of(x);
  std::vector<double> mean, var;
  channel_stats(x.const_data_ptr<float>(), l, mean, var);
  const double eps = bn.options.eps(), momentum = *bn.options.momentum();
  const double M = static_cast<double>(l.per_channel());
  std::vector<double> invstd(var.size()), unbiased(var.size());
  for (size_t c = 0; c < var.size(); ++c) {
    invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    unbiased[c] = var[c] * M / (M - 1);
  }
  const at::Tensor mean_t = to_float_tensor(mean), invstd_t = to_float_tensor(invstd);
  {
    const at::NoGradGuard no_grad;
    bn.running_mean.mul_(1 - momentum).add_(mean_t, momentum);
    bn.running_var.mul_(1 - momentum).add_(to_float_tensor(unbiased), momentum);
    bn.num_batches_tracked.add_(1);
  }
  const bool grad = at::GradMode::is_enabled() &&
                    (x.requires_grad() || bn.weight.requires_grad() || bn.bias.requires_grad());
  if (!grad) return BatchNormFunction::normalize(x, bn.weight, bn.bias, mean_t, invstd_t);
  return BatchNormFunction::apply(x, bn.weight, bn.bias, mean_t, invstd_t, eps);
}

/// Whether lathe's kernels run this call rather than ATen's, by lathe/core/kernel_choice.h: the
/// shape class is the channels, the plane and the batch rounded up to a power of two, and whether a
/// backward follows; the trial runs each side's statistics, normalisation and (then) backward on
/// the batch itself, with copies of the running statistics.
bool lathe_kernel_chosen(const BatchNorm2dImpl& bn, const at::Tensor& x) {
  const bool train = at::GradMode::is_enabled() &&
                     (x.requires_grad() || bn.weight.requires_grad() || bn.bias.requires_grad());
  const auto batch = static_cast<uint64_t>(x.size(0));
  const std::string shape_class =
      fmt::format("C={} plane={}x{} N<=2^{} {}", x.size(1), x.size(2), x.size(3),
                  std::bit_width(batch - 1), train ? "forward+backward" : "forward");
  const double eps = bn.options.eps();
  const auto side = kernels::choose("batch_norm2d", shape_class, [&](kernels::Side s) {
    const at::NoGradGuard no_grad;
    const at::Tensor d = x.detach(), w = bn.weight.detach(), b = bn.bias.detach();
    if (s == kernels::Side::lathe) {
      std::vector<double> mean, var;
      channel_stats(d.const_data_ptr<float>(), layout_of(d), mean, var);
      for (double& v : var) v = 1.0 / std::sqrt(v + eps);
      const at::Tensor mean_t = to_float_tensor(mean), invstd_t = to_float_tensor(var);
      BatchNormFunction::normalize(d, w, b, mean_t, invstd_t);
      if (train) BatchNormFunction::backward_kernel(d, d, w, mean_t, invstd_t);
    } else {
      const auto out = at::native_batch_norm(d, w, b, bn.running_mean.clone(),
                                             bn.running_var.clone(), /*training=*/true,
                                             *bn.options.momentum(), eps);
      if (train)
        at::native_batch_norm_backward(d, d, w, {}, {}, std::get<1>(out), std::get<2>(out),
                                       /*train=*/true, eps, {true, true, true});
    }
  });
  return side == kernels::Side::lathe;
}

}  // namespace

at::Tensor BatchNorm2dImpl::forward(const at::Tensor& input) {
  if (!lathe_kernel_takes(*this, input) || !lathe_kernel_chosen(*this, input))
    return torch::nn::BatchNorm2dImpl::forward(input);
  return train_forward(*this, input);
}

}  // namespace lathe::models
