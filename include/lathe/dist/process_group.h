// Data-parallel process groups on PyTorch's c10d (NCCL on CUDA, Gloo on CPU): the world from
// torchrun's / `lathe train --devices`'s environment, and the collectives the trainer uses.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace torch::nn {
class Module;
}

namespace lathe::dist {

/// This process's place among the processes of one run.
struct World {
  int rank = 0;        ///< RANK: 0..size-1 over all nodes
  int size = 1;        ///< WORLD_SIZE
  int local_rank = 0;  ///< LOCAL_RANK: this node's process index (its device)
  int local_size = 1;  ///< LOCAL_WORLD_SIZE: processes on this node
  bool active() const { return size > 1; }
  bool is_main() const { return rank == 0; }
};

/// The world the environment describes (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, as set by
/// torchrun and by `lathe train --devices N`); one process of one without them. Inconsistent
/// values are a DistError naming the variable.
World world_from_env();

/// A c10d process group for one run: Gloo on the CPU, NCCL on CUDA devices. Every collective
/// waits at most `timeout`; a rank that died or stalled makes the others throw a DistError that
/// names this rank, the operation and the timeout instead of hanging.
///
///   auto group = ProcessGroup::from_env(device, std::chrono::seconds(60));
///   group->all_reduce(grad);                    // sum over ranks, in place
///   auto wait = group->all_reduce_async(flat);  // overlapped; wait() before using `flat`
class ProcessGroup {
 public:
  /// Rendezvous from the environment: MASTER_ADDR:MASTER_PORT hosts a TCPStore (rank 0 serves
  /// it), or with TORCHELASTIC_USE_AGENT_STORE=True every rank joins torchrun's agent store under
  /// /worker/attempt_<TORCHELASTIC_RESTART_COUNT>. `backend`: auto (nccl for cuda, else gloo),
  /// gloo or nccl. GLOO_SOCKET_IFNAME picks Gloo's network interface as in PyTorch.
  static std::shared_ptr<ProcessGroup> from_env(c10::Device device,
                                                std::chrono::milliseconds timeout,
                                                const std::string& backend = "auto");
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  const World& world() const;
  int rank() const { return world().rank; }
  int size() const { return world().size; }
  const std::string& backend() const;
  std::chrono::milliseconds timeout() const;

  /// Starts summing `tensor` over all ranks, in place. The returned function waits for it and
  /// throws a DistError when it failed or timed out. Every rank must start the same collectives
  /// in the same order.
  std::function<void()> all_reduce_async(at::Tensor tensor);
  /// Sums `tensor` over all ranks, in place.
  void all_reduce(at::Tensor tensor) { all_reduce_async(std::move(tensor))(); }
  /// The largest of every rank's `value` (one all-reduce with MAX; a device sync on NCCL).
  int64_t max_over_ranks(int64_t value);
  /// Sets `tensor` everywhere to root's value, in place.
  void broadcast(at::Tensor tensor, int root = 0);
  /// Every rank's rows (n_r, ...) concatenated in rank order as (Σ n_r, m), m the row size (the
  /// caller reshapes). n_r may differ and be 0 (then the trailing shape does not matter); the
  /// row size and dtype of ranks with rows must agree.
  at::Tensor all_gather_cat(const at::Tensor& tensor);
  /// Waits until every rank arrives.
  void barrier();

 private:
  struct Impl;
  explicit ProcessGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Makes `module`'s parameters and buffers equal to rank 0's (called once before training).
void broadcast_module(ProcessGroup& group, torch::nn::Module& module);

}  // namespace lathe::dist
