// Device selection, seeding, thread setup and the facts `lathe info` reports.
#include "lathe/core/runtime.h"

#include <cstdlib>
#include <string>
#include <thread>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#if __has_include(<cuda_runtime_api.h>)
#include <ATen/cuda/CUDAContextLight.h>
#define LATHE_HAVE_CUDA_HEADERS 1
#endif
#include <torch/cuda.h>
#include <torch/utils.h>
#include <torch/version.h>

#include "lathe/core/error.h"

namespace lathe {

c10::Device select_device(std::string_view spec) {
  const bool have_cuda = torch::cuda::is_available();
  if (spec == "auto") return have_cuda ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (spec == "cpu") return c10::Device(c10::kCPU);
  if (spec == "cuda" || spec.starts_with("cuda:")) {
    LATHE_CHECK(have_cuda, ConfigError,
                "run.device: '{}' asked for, but CUDA is not available on this machine "
                "(torch sees no GPU); use run.device=auto or run.device=cpu",
                spec);
    int index = 0;
    if (spec.size() > 5) {
      const std::string digits(spec.substr(5));
      LATHE_CHECK(!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos,
                  ConfigError, "run.device: '{}' is not a device; expected cuda:N", spec);
      index = std::stoi(digits);
    }
    const auto count = static_cast<int>(torch::cuda::device_count());
    LATHE_CHECK(index < count, ConfigError,
                "run.device: '{}' asked for, but this machine has {} CUDA device(s) (0..{})", spec,
                count, count - 1);
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw ConfigError(fmt::format(
      "run.device: '{}' is not a device; expected auto, cpu, cuda or cuda:N", spec));
}

void seed_everything(uint64_t seed) { torch::manual_seed(seed); }

int setup_threads(int requested) {
  LATHE_CHECK(requested >= 0, ConfigError, "run.threads: {} is negative; use 0 for one per core",
              requested);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int n = requested > 0 ? requested : cores;
  if (at::get_num_threads() != n) at::set_num_threads(n);
  return at::get_num_threads();
}

void set_deterministic(bool on) {
  if (on) {
    // cuBLAS is deterministic only with a fixed workspace, read from the environment when its
    // first handle is made: set it now (before any CUDA work), as PyTorch's docs ask of users.
    const char* ws = std::getenv("CUBLAS_WORKSPACE_CONFIG");
    if (ws == nullptr) {
      ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    } else {
      const std::string value(ws);
      LATHE_CHECK(value == ":4096:8" || value == ":16:8", ConfigError,
                  "run.deterministic: CUBLAS_WORKSPACE_CONFIG={} makes cuBLAS nondeterministic; "
                  "unset it or export CUBLAS_WORKSPACE_CONFIG=:4096:8 before starting lathe",
                  value);
    }
  }
  at::globalContext().setDeterministicAlgorithms(on, /*warn_only=*/false);
  at::globalContext().setDeterministicCuDNN(on);
  at::globalContext().setBenchmarkCuDNN(!on);
}

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  info.lathe_version = LATHE_VERSION;
  info.torch_version = TORCH_VERSION;
  info.cuda_available = torch::cuda::is_available();
  info.cudnn_available = torch::cuda::cudnn_is_available();
  info.cudnn_version = info.cudnn_available ? at::detail::getCUDAHooks().versionCuDNN() : 0;
#ifdef LATHE_HAVE_CUDA_HEADERS
  if (info.cuda_available) {
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i) {
      const auto* p = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(i));
      info.cuda_devices.push_back(fmt::format("{} ({:.1f} GiB, sm_{}{})", p->name,
                                              static_cast<double>(p->totalGlobalMem) / (1 << 30),
                                              p->major, p->minor));
    }
  }
#else
  for (int64_t i = 0; info.cuda_available && i < int64_t(torch::cuda::device_count()); ++i)
    info.cuda_devices.push_back(fmt::format("cuda:{}", i));
#endif
  info.intra_op_threads = at::get_num_threads();
  info.inter_op_threads = at::get_num_interop_threads();
  info.hardware_threads = static_cast<int>(std::thread::hardware_concurrency());
  info.mkldnn_available = at::hasMKLDNN();
  return info;
}

}  // namespace lathe
