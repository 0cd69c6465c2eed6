// Runtime setup shared by every command: device choice, one seed for every RNG, intra-op threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <c10/core/Device.h>

namespace lathe {

/// Turns a device spec into a device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or
/// "cuda:N". Asking for CUDA on a machine without it is a ConfigError that says so.
///
///   auto device = lathe::select_device("auto");
c10::Device select_device(std::string_view spec);

/// Seeds every generator lathe draws from (torch's CPU and CUDA generators; lathe's loaders
/// derive their own streams from the same seed and the epoch).
void seed_everything(uint64_t seed);

/// Sets torch's intra-op thread count: `requested` > 0 is used as is, 0 means one per core.
/// Returns the number in effect. Threads lathe creates call at::init_num_threads() themselves.
int setup_threads(int requested);

/// Deterministic algorithms on (CPU and CUDA) or off.
void set_deterministic(bool on);

/// What `lathe info` prints: versions, accelerators and threads.
struct RuntimeInfo {
  std::string lathe_version;
  std::string torch_version;
  bool cuda_available = false;
  bool cudnn_available = false;
  int64_t cudnn_version = 0;
  std::vector<std::string> cuda_devices;  ///< "NVIDIA H200 (139.8 GiB, sm_90)"
  int intra_op_threads = 0;
  int inter_op_threads = 0;
  int hardware_threads = 0;
  bool mkldnn_available = false;
};
RuntimeInfo runtime_info();

}  // namespace lathe
