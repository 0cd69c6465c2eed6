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

/// Waits for all work queued on `device` (no-op on the CPU).
void synchronize(c10::Device device);

/// The most bytes torch's caching allocator had allocated on `device` since the last
/// reset_peak_memory (0 on the CPU).
int64_t peak_memory_bytes(c10::Device device);

/// Starts a new peak-memory window on `device` (no-op on the CPU).
void reset_peak_memory(c10::Device device);

}  // namespace lathe
