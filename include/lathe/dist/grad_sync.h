// GradientSync: data-parallel gradients — bucketed all-reduce launched from gradient hooks while
// backward still runs, averaged over the ranks before the optimizer step.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/dist/process_group.h"
#include "lathe/dist/reduce.h"

namespace torch::nn {
class Module;
}

namespace lathe::dist {

/// Keeps the gradients of one model equal on every rank, as PyTorch's DDP does. The trainable
/// parameters are grouped, last first (the order backward produces them), into buckets of about
/// `bucket_mb` MiB. A hook on each parameter copies its gradient into its bucket; when a bucket is
/// full its asynchronous all-reduce starts (in bucket order, the same on every rank), overlapping
/// with the rest of backward. before_step() waits for all of them and leaves the mean over ranks
/// in every .grad. With gradient accumulation only the last micro-batch's backward syncs.
///
///   GradientSync sync(group, *model, /*bucket_mb=*/25);
///   sync.before_backward(/*sync=*/true);  loss.backward();
///   sync.before_step();                   optimizer.step();
class GradientSync {
 public:
  GradientSync(std::shared_ptr<ProcessGroup> group, torch::nn::Module& module, double bucket_mb);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  /// Before each backward: `sync` = this backward completes the gradients of an optimizer step
  /// (the last micro-batch of an accumulation group); otherwise they only accumulate locally.
  /// Re-buckets when the set of trainable parameters changed (unfreezing).
  void before_backward(bool sync);
  /// After the syncing backward, before unscale / clip / step: waits for every bucket (starting
  /// those whose parameters got no gradient, with zeros for them) and writes the mean over ranks
  /// into each parameter's .grad. A dead or stalled rank makes this throw a DistError.
  void before_step();

  /// Sets the module's buffers (BatchNorm running statistics, ...) to rank 0's, as DDP does;
  /// each rank's training forwards update them from its own shard. Called before evaluation,
  /// so every rank evaluates rank 0's model, the one that is saved.
  void broadcast_buffers();

  ProcessGroup& group() { return *group_; }
  size_t num_buckets() const { return buckets_.size(); }
  /// Sizes of the buckets in elements, in launch order.
  std::vector<int64_t> bucket_sizes() const;
  /// How many buckets started during the last syncing backward (the rest in before_step()).
  int64_t overlapped_buckets() const { return overlapped_; }
  /// The collectives a Meter needs to combine its state over this group's ranks.
  MeterReduce meter_reduce();

 private:
  struct Slot {
    size_t param;        // index into params_
    int64_t offset = 0;  // into the bucket's flat buffer
    int64_t numel = 0;
    bool ready = false;
  };
  struct Bucket {
    at::Tensor flat;  // (numel) the bucket's gradients, contiguous
    std::vector<Slot> slots;
    size_t pending = 0;          // slots still waiting for their gradient
    std::function<void()> wait;  // set once launched
  };
  void build();
  void clear_hooks();
  void on_grad(size_t bucket, size_t slot, const at::Tensor& grad);
  void launch_ready();

  std::shared_ptr<ProcessGroup> group_;
  torch::nn::Module& module_;
  int64_t bucket_bytes_;
  std::vector<at::Tensor> params_;  // trainable parameters, in module order
  std::vector<unsigned> hooks_;     // hook handle per params_ entry
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;
  bool armed_ = false;
  int64_t overlapped_ = 0;
  std::mutex mu_;  // hooks may run on autograd's device threads
};

}  // namespace lathe::dist
