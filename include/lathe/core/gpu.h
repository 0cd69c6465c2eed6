// GPU runtime helpers: precision resolution, cuDNN setup, synchronisation and peak memory —
// device-generic signatures, CUDA underneath (no-ops on the CPU).
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/Device.h>

namespace lathe {

/// Whether `device` runs bf16 matrix work natively: CUDA devices of compute capability ≥ 8.0
/// (Ampere, Hopper, ...). False on the CPU.
bool bf16_native(c10::Device device);

/// trainer.precision as it will run: "auto" is "bf16" on CUDA devices with native bf16 and "32"
/// everywhere else (the CPU included); "32", "bf16" and "fp16" stay as they are.
///
///   resolve_precision("auto", c10::Device("cuda:0"));  // "bf16" on an H100
std::string resolve_precision(const std::string& precision, c10::Device device);

/// Per-process CUDA setup for training: cuDNN benchmark mode (autotuned convolution algorithms)
/// unless `deterministic`. No-op without CUDA.
void configure_cuda(bool deterministic);

/// Makes `device` the current CUDA device of this process (what NCCL, streams and the caching
/// allocator use when no device is named): a data-parallel rank binds cuda:LOCAL_RANK before
/// anything else touches CUDA. No-op on the CPU.
void use_device(c10::Device device);

/// trainer.matmul_precision as PyTorch's float32_matmul_precision: "auto" is "high" (TF32
/// tensor cores, as torch.set_float32_matmul_precision("high")) on CUDA when the run trains in
/// precision 32 and is not deterministic, "highest" otherwise (the CPU included, where it keeps
/// float32 results bit-stable); other settings stay as they are.
std::string resolve_matmul_precision(const std::string& setting, const std::string& precision,
                                     bool deterministic, c10::Device device);

/// Waits for all work queued on `device` — that device, whichever is current (no-op on the
/// CPU).
void synchronize(c10::Device device);

/// The most bytes torch's caching allocator had allocated on `device` since the last
/// reset_peak_memory (0 on the CPU).
int64_t peak_memory_bytes(c10::Device device);

/// Starts a new peak-memory window on `device` (no-op on the CPU).
void reset_peak_memory(c10::Device device);

}  // namespace lathe
