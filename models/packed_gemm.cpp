// lathe's packed GEMM: the panel layout, the AVX-512 micro-kernel (4 rows × 32 columns in
// registers) and its at::addmm fallback.
#include "models/packed_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <string>

#include "lathe/core/error.h"
#include "lathe/core/kernel_choice.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LATHE_PACKED_GEMM_AVX512 1
#endif

namespace lathe::models {
namespace {

constexpr int64_t kPanel = 16;  // columns per panel: one AVX-512 register of floats
std::atomic<bool> kernel_on{true};

bool cpu_runs_kernel() {
#ifdef LATHE_PACKED_GEMM_AVX512
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512 && kernel_on.load();
#else
  return false;
#endif
}

#ifdef LATHE_PACKED_GEMM_AVX512
/// C (R, 16·P) = [C +] A (R, K) · P panels. The R·P accumulators stay in registers for the whole
/// K loop: per k, P panel rows are loaded and each of A's R values broadcast into P FMAs. The last
/// panel's columns past N are masked (`last`: its valid columns as a bit mask). A is read as stored
/// (a[r·lda + k]), or transposed (TA: a[k·lda + r], the R values of a k side by side).
template <int R, int P, bool TA>
[[gnu::target("avx512f")]] void micro_kernel(const float* a, int64_t lda, const float* panels,
                                             int64_t K, float* c, int64_t ldc, bool accumulate,
                                             uint16_t last) {
  __m512 acc[R][P];
  const auto mask = [&](int p) { return static_cast<__mmask16>(p == P - 1 ? last : 0xFFFF); };
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < P; ++p)
      acc[r][p] = accumulate ? _mm512_maskz_loadu_ps(mask(p), c + r * ldc + kPanel * p)
                             : _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 b[P];
    for (int p = 0; p < P; ++p) b[p] = _mm512_loadu_ps(panels + (p * K + k) * kPanel);
    for (int r = 0; r < R; ++r) {
      const __m512 x = _mm512_set1_ps(TA ? a[k * lda + r] : a[r * lda + k]);
      for (int p = 0; p < P; ++p) acc[r][p] = _mm512_fmadd_ps(x, b[p], acc[r][p]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < P; ++p) _mm512_mask_storeu_ps(c + r * ldc + kPanel * p, mask(p), acc[r][p]);
}

/// One call of the micro-kernel: `rows` (1-4) rows of A from `a` against one panel or a pair.
struct Block {
  const float* a;
  int64_t lda;
  bool a_transposed;
  int rows;
  const float* panels;
  int64_t K;
  float* c;
  int64_t ldc;
  bool accumulate, pair;
  uint16_t last;
};

template <int P, bool TA>
void run_rows(const Block& b) {
  const auto run = [&](auto kernel) {
    kernel(b.a, b.lda, b.panels, b.K, b.c, b.ldc, b.accumulate, b.last);
  };
  switch (b.rows) {
    case 4: return run(micro_kernel<4, P, TA>);
    case 3: return run(micro_kernel<3, P, TA>);
    case 2: return run(micro_kernel<2, P, TA>);
    default: return run(micro_kernel<1, P, TA>);
  }
}

void run_block(const Block& b) {
  if (b.pair)
    b.a_transposed ? run_rows<2, true>(b) : run_rows<2, false>(b);
  else
    b.a_transposed ? run_rows<1, true>(b) : run_rows<1, false>(b);
}

#endif

}  // namespace

namespace detail {
void set_packed_gemm_kernel(bool on) { kernel_on.store(on); }
}  // namespace detail

namespace {
const at::Tensor& checked(const at::Tensor& w) {
  LATHE_CHECK(w.dim() == 2 && w.device().is_cpu() && w.scalar_type() == at::kFloat, ModelError,
              "packed GEMM: expected a 2-d float32 CPU matrix, got {} {} on {}",
              c10::toString(w.scalar_type()), w.sizes(), w.device().str());
  return w;
}
}  // namespace

PackedMatrix::PackedMatrix(const at::Tensor& w, bool transposed, bool pack, bool single_use)
    : k_(checked(w).size(transposed ? 1 : 0)),
      n_(w.size(transposed ? 0 : 1)),
      own_(pack && cpu_runs_kernel()),
      transposed_(transposed),
      single_use_(single_use),
      w_(w),
      op_(transposed ? w.t() : w) {}

void PackedMatrix::pack() const {
  const int64_t num_panels = (n_ + kPanel - 1) / kPanel;
  panels_ = at::empty({num_panels, k_, kPanel}, w_.options());
  if (n_ % kPanel != 0) panels_[num_panels - 1].zero_();  // the lanes past N: zeros
  const at::Tensor src = w_.contiguous();
  const float* s = src.const_data_ptr<float>();
  float* d = panels_.mutable_data_ptr<float>();
  // Column n of op(W) goes to panel n / 16, lane n % 16: panel p, row k at d[(p·K + k)·16].
  if (transposed_) {
    for (int64_t n = 0; n < n_; ++n) {  // op(W)[k][n] = W[n][k]: W's row n, spread down a lane
      const float* row = s + n * k_;
      float* out = d + (n / kPanel) * k_ * kPanel + n % kPanel;
      for (int64_t k = 0; k < k_; ++k) out[k * kPanel] = row[k];
    }
  } else {
    for (int64_t k = 0; k < k_; ++k)  // W's row k, cut into panels' rows
      for (int64_t p = 0; p < num_panels; ++p)
        std::memcpy(d + (p * k_ + k) * kPanel, s + k * n_ + p * kPanel,
                    sizeof(float) * static_cast<size_t>(std::min(kPanel, n_ - p * kPanel)));
  }
}

void PackedMatrix::aten_multiply(const float* a, int64_t lda, int64_t m, float* c, int64_t ldc,
                                 bool accumulate, bool a_transposed) const {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor a_t =
      at::from_blob(const_cast<float*>(a), {m, k_},
                    a_transposed ? at::IntArrayRef{1, lda} : at::IntArrayRef{lda, 1}, f32);
  at::Tensor c_t = at::from_blob(c, {m, n_}, {ldc, 1}, f32);
  if (accumulate)
    c_t.addmm_(a_t, op_);
  else
    at::mm_out(c_t, a_t, op_);
}

bool PackedMatrix::own_kernel_for(const float* a, int64_t lda, int64_t m,
                                  bool a_transposed) const {
  if (!own_) return false;
  const int key = a_transposed ? 1 : 0;
  if (decided_m_[key] == m) return decided_own_[key];
  // The shape class: op(A) (m, k) with m rounded up to a power of two, op(W) (k, n), and whether A
  // comes transposed; the trial writes both sides' products into a scratch C.
  const std::string shape_class = fmt::format(
      "m<=2^{} k={} n={}{}{}", std::bit_width(static_cast<uint64_t>(m - 1)), k_, n_,
      a_transposed ? " A transposed" : "", single_use_ ? " packed for it" : "");
  at::Tensor scratch;
  const auto side = kernels::choose("packed_gemm", shape_class, [&](kernels::Side s) {
    if (!scratch.defined()) scratch = at::empty({m, n_}, w_.options());
    if (s == kernels::Side::lathe && single_use_)  // the packing is part of this side's cost
      PackedMatrix(w_, transposed_, true)
          .own_multiply(a, lda, m, scratch.mutable_data_ptr<float>(), n_, false, a_transposed);
    else if (s == kernels::Side::lathe)
      aten_multiply(a, lda, m, scratch.mutable_data_ptr<float>(), n_, false, a_transposed);
  });
  decided_m_[key] = m;
  decided_own_[key] = side == kernels::Side::lathe;
  return decided_own_[key];
}

void PackedMatrix::multiply(const float* a, int64_t lda, int64_t m, float* c, int64_t ldc,
                            bool accumulate, bool a_transposed) const {
  if (m == 0 || n_ == 0) return;
  if (own_kernel_for(a, lda, m, a_transposed))
    own_multiply(a, lda, m, c, ldc, accumulate, a_transposed);
  else
    aten_multiply(a, lda, m, c, ldc, accumulate, a_transposed);
}

void PackedMatrix::own_multiply(const float* a, int64_t lda, int64_t m, float* c, int64_t ldc,
                                bool accumulate, bool a_transposed) const {
  if (!panels_.defined()) pack();
#ifdef LATHE_PACKED_GEMM_AVX512
  const int64_t num_panels = panels_.size(0);
  const int64_t groups = (num_panels + 1) / 2;  // pairs of panels: 32 columns
  const auto tail = static_cast<uint16_t>(n_ % kPanel ? (1u << (n_ % kPanel)) - 1 : 0xFFFF);
  const float* panels = panels_.const_data_ptr<float>();
  // Column pairs split over the threads, ≥ ~64K multiply-adds a chunk (small products stay on one
  // thread); each pair's panels stay in cache while A's rows stream past, 4 at a time. (Measured
  // and dropped for Aᵀ: 8-row blocks, and 4-row strips copied per 256-deep K block, both slower
  // than reading Aᵀ as it is.)
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, m * k_ * 2 * kPanel));
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t p0 = 2 * g;
      const bool pair = p0 + 1 < num_panels;
      const uint16_t last = p0 + (pair ? 2 : 1) == num_panels ? tail : uint16_t{0xFFFF};
      for (int64_t r0 = 0; r0 < m; r0 += 4)
        run_block({a_transposed ? a + r0 : a + r0 * lda, lda, a_transposed,
                   static_cast<int>(std::min<int64_t>(4, m - r0)), panels + p0 * k_ * kPanel, k_,
                   c + r0 * ldc + p0 * kPanel, ldc, accumulate, pair, last});
    }
  });
#endif
}

}  // namespace lathe::models
