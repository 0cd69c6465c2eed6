// GPU runtime helpers on ATen's CUDA context and caching allocator; CPU fallbacks without CUDA.
#include "lathe/core/gpu.h"

#include <ATen/Context.h>
#if __has_include(<cuda_runtime_api.h>)
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#define LATHE_CUDA_HEADERS 1
#endif
#include <torch/cuda.h>

namespace lathe {

bool bf16_native(c10::Device device) {
#ifdef LATHE_CUDA_HEADERS
  if (!device.is_cuda() || !torch::cuda::is_available()) return false;
  const c10::DeviceIndex index = device.has_index() ? device.index() : c10::DeviceIndex(0);
  return at::cuda::getDeviceProperties(index)->major >= 8;
#else
  (void)device;
  return false;
#endif
}

std::string resolve_precision(const std::string& precision, c10::Device device) {
  if (precision != "auto") return precision;
  return bf16_native(device) ? "bf16" : "32";
}

void configure_cuda(bool deterministic) {
  if (!torch::cuda::is_available()) return;
  at::globalContext().setBenchmarkCuDNN(!deterministic);
}

void use_device(c10::Device device) {
#ifdef LATHE_CUDA_HEADERS
  if (device.is_cuda() && torch::cuda::is_available())
    c10::cuda::set_device(device.has_index() ? device.index() : c10::DeviceIndex(0));
#else
  (void)device;
#endif
}

std::string resolve_matmul_precision(const std::string& setting, const std::string& precision,
                                     bool deterministic, c10::Device device) {
  if (setting != "auto") return setting;
  return device.is_cuda() && precision == "32" && !deterministic ? "high" : "highest";
}

void synchronize(c10::Device device) {
#ifdef LATHE_CUDA_HEADERS
  if (!device.is_cuda()) return;
  // device_synchronize() waits for the current device only: make `device` current meanwhile.
  const c10::cuda::CUDAGuard on(device.has_index() ? device.index() : c10::DeviceIndex(0));
  c10::cuda::device_synchronize();
#else
  (void)device;
#endif
}

int64_t peak_memory_bytes(c10::Device device) {
#ifdef LATHE_CUDA_HEADERS
  if (!device.is_cuda() || !torch::cuda::is_available()) return 0;
  namespace alloc = c10::cuda::CUDACachingAllocator;
  const auto stats = alloc::getDeviceStats(device.has_index() ? device.index() : 0);
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .peak;
#else
  (void)device;
  return 0;
#endif
}

void reset_peak_memory(c10::Device device) {
#ifdef LATHE_CUDA_HEADERS
  if (device.is_cuda() && torch::cuda::is_available())
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.has_index() ? device.index() : 0);
#else
  (void)device;
#endif
}

}  // namespace lathe
