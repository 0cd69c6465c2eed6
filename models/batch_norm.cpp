// BatchNorm training kernels for CPU float32: per-channel statistics, normalisation and backward.
#include "models/batch_norm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "models/simd.h"

namespace lathe::models {
namespace {

// A batch seen as outer × channels × inner floats: NCHW is (N, C, H·W); channels-last and (N, C)
// are (N·H·W, C, 1), one row of C channels per pixel.
struct Layout {
  int64_t outer = 0, channels = 0, inner = 0;
  bool rows() const { return inner == 1; }  // channels contiguous: loops run along the row
  int64_t per_channel() const { return outer * inner; }
};

constexpr int64_t kBlock = 4096;  // floats summed in float before the total (double) takes them

// ---- NCHW: one channel's plane of `inner` floats at a time ----------------------------------

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

// ---- channels-last and (N, C): `rows` rows of `n` channels, `stride` floats apart ------------
// Each function loops over its rows itself: a call per row (100,000 rows in the demo CNN's first
// batch norm) would cost more than the row's arithmetic.

LATHE_VECTOR_CLONES void rows_add(float* acc, const float* x, int64_t rows, int64_t stride,
                                  int64_t n) {
  for (int64_t r = 0; r < rows; ++r, x += stride)
    for (int64_t c = 0; c < n; ++c) acc[c] += x[c];
}

LATHE_VECTOR_CLONES void rows_add_sqdev(float* acc, const float* x, const float* mean,
                                        int64_t rows, int64_t stride, int64_t n) {
  for (int64_t r = 0; r < rows; ++r, x += stride)
    for (int64_t c = 0; c < n; ++c) acc[c] += (x[c] - mean[c]) * (x[c] - mean[c]);
}

LATHE_VECTOR_CLONES void rows_add_grad(float* sdy, float* sdyx, const float* dy, const float* x,
                                       const float* mean, int64_t rows, int64_t stride,
                                       int64_t n) {
  for (int64_t r = 0; r < rows; ++r, dy += stride, x += stride)
    for (int64_t c = 0; c < n; ++c) {
      sdy[c] += dy[c];
      sdyx[c] += dy[c] * (x[c] - mean[c]);
    }
}

LATHE_VECTOR_CLONES void rows_affine(const float* x, float* y, const float* a, const float* b,
                                     int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r, x += n, y += n)
    for (int64_t c = 0; c < n; ++c) y[c] = x[c] * a[c] + b[c];
}

LATHE_VECTOR_CLONES void rows_affine2(const float* dy, const float* x, float* dx, const float* a,
                                      const float* b, const float* c, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r, dy += n, x += n, dx += n)
    for (int64_t k = 0; k < n; ++k) dx[k] = dy[k] * a[k] + x[k] * b[k] + c[k];
}

/// For each channel in [c0, c1): total[c] += Σ over rows of row_fn's per-row contributions, rows
/// summed in float kBlock / channels at a time, then in double. `add_rows(acc, r0, r1)` adds
/// rows [r0, r1) of channels [c0, c1) into acc (floats, one per channel in the range).
template <typename AddRows>
void reduce_rows(const Layout& l, int64_t c0, int64_t c1, double* total, AddRows add_rows) {
  const int64_t n = c1 - c0, step = std::max<int64_t>(1, kBlock / std::max<int64_t>(n, 1));
  std::vector<float> acc(n);
  for (int64_t r0 = 0; r0 < l.outer; r0 += step) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    add_rows(acc.data(), r0, std::min(l.outer, r0 + step));
    for (int64_t c = 0; c < n; ++c) total[c] += acc[c];
  }
}

/// Per-channel mean and biased variance of x (two passes: the mean, then Σ (x − mean)²).
void channel_stats(const float* x, const Layout& l, std::vector<double>& mean,
                   std::vector<double>& var) {
  const int64_t C = l.channels, M = l.per_channel();
  mean.assign(C, 0.0);
  var.assign(C, 0.0);
  std::vector<float> mean_f(C);
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    if (!l.rows()) {
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
      return;
    }
    reduce_rows(l, c0, c1, mean.data() + c0, [&](float* acc, int64_t r0, int64_t r1) {
      rows_add(acc, x + r0 * C + c0, r1 - r0, C, c1 - c0);
    });
    for (int64_t c = c0; c < c1; ++c) {
      mean[c] /= M;
      mean_f[c] = static_cast<float>(mean[c]);
    }
    reduce_rows(l, c0, c1, var.data() + c0, [&](float* acc, int64_t r0, int64_t r1) {
      rows_add_sqdev(acc, x + r0 * C + c0, mean_f.data() + c0, r1 - r0, C, c1 - c0);
    });
    for (int64_t c = c0; c < c1; ++c) var[c] /= M;
  });
}

/// out = x·a[c] + b[c] (+ g·e[c] when g is given: the backward's dy·a + x·b + c form).
void channel_affine(const float* x, float* out, const Layout& l, const float* a, const float* b,
                    const float* g = nullptr, const float* e = nullptr) {
  const int64_t C = l.channels;
  if (!l.rows()) {
    at::parallel_for(0, l.outer * C, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {  // plane p = (o, c)
        const int64_t c = p % C, off = p * l.inner;
        if (g)
          plane_affine2(g + off, x + off, out + off, l.inner, e[c], a[c], b[c]);
        else
          plane_affine(x + off, out + off, l.inner, a[c], b[c]);
      }
    });
    return;
  }
  at::parallel_for(0, l.outer, std::max<int64_t>(1, 32768 / C), [&](int64_t r0, int64_t r1) {
    if (g)
      rows_affine2(g + r0 * C, x + r0 * C, out + r0 * C, e, a, b, r1 - r0, C);
    else
      rows_affine(x + r0 * C, out + r0 * C, a, b, r1 - r0, C);
  });
}

Layout layout_of(const at::Tensor& x) {
  if (x.dim() == 2) return {x.size(0), x.size(1), 1};
  if (x.is_contiguous()) return {x.size(0), x.size(1), x.size(2) * x.size(3)};
  return {x.size(0) * x.size(2) * x.size(3), x.size(1), 1};  // channels-last
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
    const at::Tensor dy = grad.contiguous(x.suggest_memory_format());
    const Layout l = layout_of(x);
    const int64_t C = l.channels;
    const float *px = x.const_data_ptr<float>(), *pdy = dy.const_data_ptr<float>();
    const float *m = mean.const_data_ptr<float>(), *s = invstd.const_data_ptr<float>();
    const float* w = weight.const_data_ptr<float>();
    std::vector<double> sdy(C, 0.0), sdyx(C, 0.0);
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      if (!l.rows()) {
        for (int64_t c = c0; c < c1; ++c) {
          double sums[2] = {0, 0};
          for (int64_t o = 0; o < l.outer; ++o) {
            const int64_t off = (o * C + c) * l.inner;
            plane_grad_sums(pdy + off, px + off, l.inner, m[c], sums);
          }
          sdy[c] = sums[0];
          sdyx[c] = sums[1];
        }
        return;
      }
      std::vector<float> acc2(c1 - c0);
      reduce_rows(l, c0, c1, sdy.data() + c0, [&](float* acc, int64_t r0, int64_t r1) {
        std::fill(acc2.begin(), acc2.end(), 0.0f);
        rows_add_grad(acc, acc2.data(), pdy + r0 * C + c0, px + r0 * C + c0, m + c0, r1 - r0, C,
                      c1 - c0);
        for (int64_t c = c0; c < c1; ++c) sdyx[c] += acc2[c - c0];
      });
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

/// Whether lathe's kernels take this training-mode batch norm: CPU float32, contiguous (NCHW or
/// channels-last for 4-D; (N, C) for 2-D), affine with running statistics and a momentum, more
/// than one value per channel, not traced. `dims` is the module's input rank.
template <typename Impl>
bool lathe_kernel_takes(const Impl& bn, const at::Tensor& x, int64_t dims) {
  const auto& o = bn.options;
  if (!bn.is_training() || !o.affine() || !o.track_running_stats() || !o.momentum()) return false;
  if (x.dim() != dims || !x.device().is_cpu() || x.scalar_type() != at::kFloat) return false;
  if (x.numel() == 0 || x.numel() / x.size(1) <= 1) return false;  // torch's own error for 1 value
  if (bn.weight.scalar_type() != at::kFloat || !bn.running_mean.defined()) return false;
  if (torch::jit::tracer::isTracing()) return false;
  return dims == 2 ? x.is_contiguous()
                   : x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

/// The training forward: statistics, running-statistics update (as torch's: momentum, unbiased
/// variance, num_batches_tracked + 1), then the normalisation under autograd.
template <typename Impl>
at::Tensor train_forward(Impl& bn, const at::Tensor& x) {
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

}  // namespace

at::Tensor BatchNorm2dImpl::forward(const at::Tensor& input) {
  if (!lathe_kernel_takes(*this, input, 4)) return torch::nn::BatchNorm2dImpl::forward(input);
  return train_forward(*this, input);
}

at::Tensor BatchNorm1dImpl::forward(const at::Tensor& input) {
  if (!lathe_kernel_takes(*this, input, 2)) return torch::nn::BatchNorm1dImpl::forward(input);
  return train_forward(*this, input);
}

}  // namespace lathe::models
