// How the zoo's CPU kernels (kernels.cpp, batch_norm.cpp, lstm.cpp) ask for loops vectorised per
// CPU, and the exponential they share.
#pragma once

#include <bit>
#include <cstdint>

// A function marked LATHE_VECTOR_CLONES is compiled three times on x86-64 — AVX-512, AVX2 + FMA
// and the baseline — and the loader picks the widest the CPU runs. Its loops must be written for
// the vectoriser (no branches, no library calls; a reduction says so with `#pragma omp simd
// reduction`), which the build runs on these files at -O3 with -fopenmp (CMakeLists.txt).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LATHE_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LATHE_VECTOR_CLONES
#endif

namespace lathe::models::simd {

/// e^v, within 2 ulp for v in [-87, 88] (Cephes' expf polynomial on v − n·ln 2, times 2^n built in
/// the exponent bits). Below -87 it gives ~1.6e-38; above 88.7 +inf, as expf does.
[[gnu::always_inline]] inline float exp_poly(float v) {
  v = v < -87.0f ? -87.0f : (v > 89.0f ? 89.0f : v);
  const float n = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(v / ln 2)
  const float r = (v - n * 0.693359375f) + n * 2.12194440e-4f;             // v − n·ln 2, two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;                                            // e^r
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;          // 2^n; n = 128 gives +inf
  return p * std::bit_cast<float>(bits);
}

}  // namespace lathe::models::simd
