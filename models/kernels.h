// Elementwise kernels of the zoo's own, run instead of ATen's where they time faster on the CPU.
#pragma once

#include <ATen/core/Tensor.h>

namespace lathe::models {

/// GELU with the tanh approximation (Hugging Face's gelu_new, at::gelu(x, "tanh")):
/// 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), computed as x · sigmoid(2u).
///
/// A contiguous float32 CPU tensor goes through lathe's own forward and backward kernels (one pass
/// each, vectorised for AVX-512 / AVX2 where the CPU has them) or ATen's, whichever the first call
/// of its size class times faster on this machine (lathe/core/kernel_choice.h; LATHE_KERNELS
/// forces one). lathe's is within 4e-6 relative of the formula in double, and within 1e-5
/// relative / 1e-6 absolute of ATen's float kernel, which itself cancels for x < -4 (test
/// Kernels.GeluTanhMatchesAtenForwardAndBackward). Anything else — CUDA, half precision, a
/// strided view, a trace for ONNX export, a double backward — runs at::gelu.
///
///   at::Tensor y = lathe::models::gelu_tanh(c_fc(x));  // (B, T, 4C)
at::Tensor gelu_tanh(const at::Tensor& x);

}  // namespace lathe::models
