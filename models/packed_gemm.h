// A float32 matrix packed once for lathe's AVX-512 GEMM kernel and multiplied many times: the
// recurrent weight an LSTM applies at every step.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lathe::models {

/// op(W) as the right-hand factor of C = A · op(W), packed for lathe's CPU kernel: panels of 16
/// columns, each K rows of 16 contiguous values (the last zero-padded), so that the kernel runs 4
/// rows of A against 32 columns from registers. Each product shape runs lathe's kernel or at::mm,
/// whichever its first call times faster on this machine (lathe/core/kernel_choice.h, kernel
/// "packed_gemm"; LATHE_KERNELS forces one); the panels are made on the first product that runs
/// lathe's kernel. On a CPU without AVX-512 (or with the kernel turned off, for tests) multiply()
/// runs at::addmm.
///
///   PackedMatrix w_t(w_hh, /*transposed=*/true);        // op(W) = W_hhᵀ: (H, 4H)
///   w_t.multiply(h.data, H, B, gates.data, 4 * H, true);  // gates (B, 4H) += h (B, H) · W_hhᵀ
class PackedMatrix {
 public:
  /// `w` is float32 on the CPU, 2-d: op(W) = W (K, N), or Wᵀ with W (N, K) when `transposed`.
  /// Packing costs about as much as multiplying ~60 rows of A faster saves; a caller with fewer
  /// rows in all passes `pack` false and gets at::addmm. `single_use`: the matrix takes part in one
  /// product only (a weight gradient's activations), so the packing is timed with lathe's side
  /// when the kernel is weighed against at::mm.
  PackedMatrix(const at::Tensor& w, bool transposed, bool pack = true, bool single_use = false);

  int64_t k() const { return k_; }  ///< rows of op(W)
  int64_t n() const { return n_; }  ///< columns of op(W)

  /// C (m, n) = A (m, k) · op(W), or C += A · op(W) with `accumulate`. A and C are row-major
  /// float32 with leading dimensions lda ≥ k and ldc ≥ n; with `a_transposed`, A is given as Aᵀ,
  /// stored (k, m) with lda ≥ m (a weight gradient, gradientᵀ · input). Splits the columns over
  /// ATen's threads when the product is large enough to pay for it.
  void multiply(const float* a, int64_t lda, int64_t m, float* c, int64_t ldc, bool accumulate,
                bool a_transposed = false) const;

  /// Whether multiply() can run lathe's kernel (AVX-512 and not turned off) rather than at::addmm.
  bool runs_own_kernel() const { return own_; }

 private:
  void pack() const;
  bool own_kernel_for(const float* a, int64_t lda, int64_t m, bool a_transposed) const;
  void own_multiply(const float* a, int64_t lda, int64_t m, float* c, int64_t ldc,
                    bool accumulate, bool a_transposed) const;
  void aten_multiply(const float* a, int64_t lda, int64_t m, float* c, int64_t ldc,
                     bool accumulate, bool a_transposed) const;

  int64_t k_, n_;
  bool own_, transposed_, single_use_;
  at::Tensor w_;               // W as given
  at::Tensor op_;              // op(W) as a (K, N) view, for at::addmm
  mutable at::Tensor panels_;  // ceil(N / 16) panels of (K, 16), made on first use
  // The last choice per A layout (plain, transposed): for m rows, lathe's kernel or not.
  mutable int64_t decided_m_[2] = {-1, -1};
  mutable bool decided_own_[2] = {false, false};
};

namespace detail {
/// Turns lathe's GEMM kernel off (false) or back on for PackedMatrix objects made afterwards:
/// tests check the at::addmm path that a CPU without AVX-512 runs.
void set_packed_gemm_kernel(bool on);
}  // namespace detail

}  // namespace lathe::models
