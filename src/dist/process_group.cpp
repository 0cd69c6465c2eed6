// The one translation unit that includes c10d's backends: TCPStore rendezvous (own or torchrun's
// agent store), ProcessGroupGloo (CPU) and ProcessGroupNCCL (CUDA), wrapped in lathe's
// ProcessGroup. Gloo's headers come from Debian's libgloo-dev (the torch wheel ships the c10d
// header but not gloo/*.h); only opaque gloo pointers cross into torch's compiled Gloo, see README.
// Torch's CMake target defines both already; the headers compile their backends only with them.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include "lathe/dist/process_group.h"

#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/nn/module.h>

#include "lathe/core/error.h"
#include "lathe/core/gpu.h"
#include "lathe/core/log.h"

namespace lathe::dist {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

int env_int(const char* name, int fallback) {
  const std::string v = env_or(name, "");
  if (v.empty()) return fallback;
  try {
    size_t used = 0;
    const int out = std::stoi(v, &used);
    if (used == v.size()) return out;
  } catch (const std::exception&) {
  }
  throw DistError(fmt::format("environment variable {}='{}' is not an integer", name, v));
}

std::string message_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

}  // namespace

World world_from_env() {
  World w;
  w.size = env_int("WORLD_SIZE", 1);
  w.rank = env_int("RANK", 0);
  w.local_rank = env_int("LOCAL_RANK", w.rank);
  w.local_size = env_int("LOCAL_WORLD_SIZE", w.size);
  LATHE_CHECK(w.size >= 1 && w.rank >= 0 && w.rank < w.size, DistError,
              "RANK={} and WORLD_SIZE={} do not fit (0 <= RANK < WORLD_SIZE); set both, as "
              "torchrun and `lathe train --devices N` do",
              w.rank, w.size);
  LATHE_CHECK(w.local_rank >= 0 && w.local_rank < std::max(w.local_size, 1), DistError,
              "LOCAL_RANK={} is outside LOCAL_WORLD_SIZE={}", w.local_rank, w.local_size);
  return w;
}

struct ProcessGroup::Impl {
  World world;
  std::string backend;
  std::chrono::milliseconds timeout{};
  c10::Device device = c10::kCPU;  // where the backend's tensors live
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;

  /// Turns a failed collective into a DistError naming this rank, the operation and the timeout.
  [[noreturn]] void fail(const std::string& op, const std::string& why) const {
    throw DistError(fmt::format(
        "rank {} of {}: {} failed: {}. Another rank stopped (crashed, was killed or failed; its "
        "own log says why) or stalled longer than dist.timeout_s = {} s",
        world.rank, world.size, op, why, static_cast<double>(timeout.count()) / 1000.0));
  }
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& op) const {
    try {
      // The plain wait: for NCCL it makes the current stream wait for the collective without
      // blocking the host (wait(timeout) blocks until it completes); the group's own timeout
      // (dist.timeout_s) still aborts a collective that stalls.
      if (!work->wait()) fail(op, "did not complete");
    } catch (const DistError&) {
      throw;
    } catch (const std::exception& e) {
      fail(op, message_of(e));
    }
  }
  template <class Fn>
  auto guarded(const std::string& op, Fn&& fn) const {
    try {
      return fn();
    } catch (const std::exception& e) {
      fail(op, message_of(e));
    }
  }
};

namespace {

c10::intrusive_ptr<c10d::Store> rendezvous(const World& w, std::chrono::milliseconds timeout) {
  const std::string addr = env_or("MASTER_ADDR", "127.0.0.1");
  const int port = env_int("MASTER_PORT", 29500);
  const bool agent = env_or("TORCHELASTIC_USE_AGENT_STORE", "") == "True";
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(port);
  opts.isServer = !agent && w.rank == 0;  // torchrun's agent serves the store itself
  opts.numWorkers = agent ? std::nullopt : std::optional<size_t>(static_cast<size_t>(w.size));
  opts.waitWorkers = !agent;
  opts.timeout = timeout;
  try {
    auto store = c10::make_intrusive<c10d::TCPStore>(addr, opts);
    if (!agent) return store;
    const std::string attempt = env_or("TORCHELASTIC_RESTART_COUNT", "0");
    return c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + attempt, store);
  } catch (const std::exception& e) {
    throw DistError(fmt::format(
        "rank {} of {}: rendezvous at {}:{} ({}) failed within dist.timeout_s = {} s: {}; check "
        "MASTER_ADDR / MASTER_PORT and that every rank started",
        w.rank, w.size, addr, port, agent ? "torchrun's agent store" : "TCPStore of rank 0",
        static_cast<double>(timeout.count()) / 1000.0, message_of(e)));
  }
}

std::shared_ptr<::gloo::transport::Device> gloo_device() {
  if (const std::string ifname = env_or("GLOO_SOCKET_IFNAME", ""); !ifname.empty())
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  const std::string addr = env_or("MASTER_ADDR", "127.0.0.1");
  if (addr == "localhost" || addr.rfind("127.", 0) == 0)  // one machine: stay on loopback
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

}  // namespace

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProcessGroup::~ProcessGroup() = default;

std::shared_ptr<ProcessGroup> ProcessGroup::from_env(c10::Device device,
                                                     std::chrono::milliseconds timeout,
                                                     const std::string& backend) {
  auto impl = std::make_unique<Impl>();
  impl->world = world_from_env();
  impl->timeout = timeout;
  impl->backend = backend == "auto" ? (device.is_cuda() ? "nccl" : "gloo") : backend;
  LATHE_CHECK(impl->backend == "gloo" || device.is_cuda(), DistError,
              "dist.backend = nccl needs a CUDA device, the run uses {}; use gloo (or auto)",
              device.str());
  impl->store = rendezvous(impl->world, timeout);
  const World& w = impl->world;
  impl->guarded("creating the " + impl->backend + " process group", [&] {
    if (impl->backend == "nccl") {
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      // This rank's GPU is current before NCCL starts, and the group is bound to it (as
      // init_process_group(device_id=...)): its communicator is made now, on this device,
      // instead of lazily on whichever device is current at the first collective.
      const c10::Device bound(c10::kCUDA, device.has_index() ? device.index()
                                                             : c10::DeviceIndex(w.local_rank));
      use_device(bound);
      impl->device = bound;
      auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl->store, w.rank, w.size, opts);
      nccl->setBoundDeviceId(bound);
      nccl->eagerConnectSingleDevice(bound);
      impl->pg = nccl;
    } else {
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      opts->devices.push_back(gloo_device());
      impl->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, w.rank, w.size, opts);
    }
    return 0;
  });
  log::debug("rank {} of {}: {} process group ready", w.rank, w.size, impl->backend);
  return std::shared_ptr<ProcessGroup>(new ProcessGroup(std::move(impl)));
}

const World& ProcessGroup::world() const { return impl_->world; }
const std::string& ProcessGroup::backend() const { return impl_->backend; }
std::chrono::milliseconds ProcessGroup::timeout() const { return impl_->timeout; }

std::function<void()> ProcessGroup::all_reduce_async(at::Tensor tensor) {
  // Gloo reduces host tensors: a tensor elsewhere goes through a staging copy.
  const bool staged = tensor.device() != impl_->device || !tensor.is_contiguous();
  std::vector<at::Tensor> bufs{staged ? tensor.to(impl_->device).contiguous() : tensor};
  auto work = impl_->guarded("all_reduce", [&] { return impl_->pg->allreduce(bufs); });
  return [impl = impl_.get(), work, bufs, tensor, staged]() mutable {
    impl->wait(work, "all_reduce");
    if (staged) tensor.copy_(bufs[0]);
  };
}

int64_t ProcessGroup::max_over_ranks(int64_t value) {
  std::vector<at::Tensor> bufs{
      at::full({1}, value, at::TensorOptions(at::kLong).device(impl_->device))};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::MAX;
  auto work = impl_->guarded("all_reduce", [&] { return impl_->pg->allreduce(bufs, opts); });
  impl_->wait(work, "all_reduce");
  return bufs[0].item<int64_t>();
}

void ProcessGroup::broadcast(at::Tensor tensor, int root) {
  const bool staged = tensor.device() != impl_->device || !tensor.is_contiguous();
  std::vector<at::Tensor> bufs{staged ? tensor.to(impl_->device).contiguous() : tensor};
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  auto work = impl_->guarded("broadcast", [&] { return impl_->pg->broadcast(bufs, opts); });
  impl_->wait(work, "broadcast");
  if (staged) tensor.copy_(bufs[0]);
}

at::Tensor ProcessGroup::all_gather_cat(const at::Tensor& tensor) {
  const int64_t n_ranks = size();
  const int64_t rows = tensor.dim() == 0 ? 1 : tensor.size(0);
  const int64_t width = rows > 0 ? tensor.numel() / rows : 0;
  // Each rank's (rows, row size) first; then its rows, padded to the longest, are gathered.
  const auto gather = [&](const at::Tensor& mine) {
    std::vector<at::Tensor> in{mine};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int64_t r = 0; r < n_ranks; ++r) out[0].push_back(at::empty_like(mine));
    impl_->wait(impl_->guarded("all_gather", [&] { return impl_->pg->allgather(out, in); }),
                "all_gather");
    return out[0];
  };
  const auto shapes = gather(at::tensor({rows, width}, at::kLong).to(impl_->device));
  std::vector<int64_t> counts;
  int64_t longest = 0, m = 0;
  for (const auto& s : shapes) {
    const at::Tensor c = s.cpu();
    counts.push_back(c[0].item<int64_t>());
    longest = std::max(longest, counts.back());
    m = std::max(m, c[1].item<int64_t>());
  }
  at::Tensor padded = at::zeros({longest, m}, tensor.options().device(impl_->device));  // (L, m)
  if (rows > 0) padded.narrow(0, 0, rows).copy_(tensor.reshape({rows, m}));
  const auto parts_in = gather(padded);
  std::vector<at::Tensor> parts;
  for (int64_t r = 0; r < n_ranks; ++r) parts.push_back(parts_in[r].narrow(0, 0, counts[r]));
  return at::cat(parts).to(tensor.device());  // (Σ rows, m)
}

void ProcessGroup::barrier() {
  impl_->wait(impl_->guarded("barrier", [&] { return impl_->pg->barrier(); }), "barrier");
}

void broadcast_module(ProcessGroup& group, torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) group.broadcast(p, 0);
  for (auto& b : module.buffers()) group.broadcast(b, 0);
}

}  // namespace lathe::dist
