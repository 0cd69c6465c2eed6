// GradientSync: buckets over the trainable parameters, gradient hooks that fill them and start
// their all-reduce in bucket order, and the wait + average before the optimizer step.
#include "lathe/dist/grad_sync.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/module.h>

#include "lathe/core/error.h"
#include "lathe/core/log.h"

namespace lathe::dist {

GradientSync::GradientSync(std::shared_ptr<ProcessGroup> group, torch::nn::Module& module,
                           double bucket_mb)
    : group_(std::move(group)),
      module_(module),
      bucket_bytes_(static_cast<int64_t>(bucket_mb * 1024 * 1024)) {
  build();
}

GradientSync::~GradientSync() { clear_hooks(); }

void GradientSync::clear_hooks() {
  for (size_t i = 0; i < hooks_.size(); ++i) params_[i].remove_hook(hooks_[i]);
  hooks_.clear();
}

void GradientSync::build() {
  clear_hooks();
  params_.clear();
  buckets_.clear();
  for (auto& p : module_.parameters())
    if (p.requires_grad()) params_.push_back(p);
  // Last parameters first: backward produces their gradients first. A bucket holds one dtype
  // and device and closes when it reaches bucket_bytes_.
  for (size_t k = params_.size(); k-- > 0;) {
    const at::Tensor& p = params_[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const bool fits =
        !buckets_.empty() && buckets_.back().flat.dtype() == p.dtype() &&
        buckets_.back().flat.device() == p.device() &&
        (buckets_.back().flat.numel() * static_cast<int64_t>(p.element_size()) + bytes <=
             bucket_bytes_ ||
         buckets_.back().slots.empty());
    if (!fits) {
      buckets_.emplace_back();
      buckets_.back().flat = at::empty({0}, p.options().requires_grad(false));
    }
    Bucket& b = buckets_.back();
    b.slots.push_back({k, b.flat.numel(), p.numel(), false});
    b.flat = at::empty({b.flat.numel() + p.numel()}, b.flat.options());
  }
  hooks_.assign(params_.size(), 0);
  for (size_t bi = 0; bi < buckets_.size(); ++bi)
    for (size_t si = 0; si < buckets_[bi].slots.size(); ++si) {
      const size_t k = buckets_[bi].slots[si].param;
      // The hook holds indices, not the tensor: a tensor owning a hook that owns it would leak.
      hooks_[k] = params_[k].register_hook(
          [this, bi, si](const at::Tensor& grad) { on_grad(bi, si, grad); });
    }
  log::debug("gradient sync: {} parameters in {} buckets of at most {:.1f} MiB", params_.size(),
             buckets_.size(), static_cast<double>(bucket_bytes_) / (1024.0 * 1024.0));
}

std::vector<int64_t> GradientSync::bucket_sizes() const {
  std::vector<int64_t> out;
  for (const auto& b : buckets_) out.push_back(b.flat.numel());
  return out;
}

void GradientSync::before_backward(bool sync) {
  std::vector<at::Tensor> now;
  for (auto& p : module_.parameters())
    if (p.requires_grad()) now.push_back(p);
  bool same = now.size() == params_.size();
  for (size_t i = 0; same && i < now.size(); ++i)
    same = now[i].unsafeGetTensorImpl() == params_[i].unsafeGetTensorImpl();
  if (!same) build();  // unfreezing changed what trains; every rank does it at the same step
  std::lock_guard<std::mutex> lock(mu_);
  armed_ = sync;
  if (!sync) return;
  next_launch_ = 0;
  overlapped_ = 0;
  for (auto& b : buckets_) {
    b.pending = b.slots.size();
    b.wait = nullptr;
    for (auto& s : b.slots) s.ready = false;
  }
}

void GradientSync::on_grad(size_t bucket, size_t slot, const at::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!armed_) return;
  Bucket& b = buckets_[bucket];
  Slot& s = b.slots[slot];
  if (b.wait) return;  // already launched (a second backward through the same graph)
  torch::NoGradGuard no_grad;
  at::Tensor view = b.flat.narrow(0, s.offset, s.numel).view(grad.sizes());
  if (s.ready) {  // the same parameter twice in one backward: its gradients add up
    view.add_(grad);
    return;
  }
  // The hook runs before autograd adds `grad` to .grad: .grad still holds the earlier
  // micro-batches of an accumulation group.
  const at::Tensor& acc = params_[s.param].grad();
  if (acc.defined())
    at::add_out(view, acc, grad);
  else
    view.copy_(grad);
  s.ready = true;
  if (--b.pending == 0) launch_ready();
}

void GradientSync::launch_ready() {
  // In bucket order on every rank: c10d matches collectives by their sequence.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Bucket& b = buckets_[next_launch_++];
    b.wait = group_->all_reduce_async(b.flat);
    ++overlapped_;
  }
}

void GradientSync::before_step() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!armed_) return;
  armed_ = false;
  torch::NoGradGuard no_grad;
  // Buckets whose parameters got no gradient in this backward: their .grad (or zeros) go in.
  for (size_t bi = next_launch_; bi < buckets_.size(); ++bi) {
    Bucket& b = buckets_[bi];
    for (auto& s : b.slots) {
      if (s.ready) continue;
      at::Tensor view = b.flat.narrow(0, s.offset, s.numel);
      const at::Tensor& g = params_[s.param].grad();
      if (g.defined())
        view.copy_(g.reshape({-1}));
      else
        view.zero_();
    }
    b.pending = 0;
  }
  overlapped_ = static_cast<int64_t>(next_launch_);
  while (next_launch_ < buckets_.size()) {
    Bucket& b = buckets_[next_launch_++];
    b.wait = group_->all_reduce_async(b.flat);
  }
  const double inv_world = 1.0 / static_cast<double>(group_->size());
  for (auto& b : buckets_) {
    b.wait();
    b.wait = nullptr;
    b.flat.mul_(inv_world);
    for (const auto& s : b.slots) {
      at::Tensor& p = params_[s.param];
      const at::Tensor mean = b.flat.narrow(0, s.offset, s.numel).view(p.sizes());
      // A new gradient takes the parameter's strides (channels-last stays channels-last), as
      // fused optimizer kernels want parameter, gradient and state laid out alike.
      if (!p.grad().defined()) p.mutable_grad() = at::empty_like(p, at::MemoryFormat::Preserve);
      p.mutable_grad().copy_(mean);
    }
  }
}

void GradientSync::broadcast_buffers() {
  torch::NoGradGuard no_grad;
  for (auto& b : module_.buffers()) group_->broadcast(b, 0);
}

MeterReduce GradientSync::meter_reduce() {
  ProcessGroup* g = group_.get();
  return {[g](at::Tensor& t) { g->all_reduce(t); },
          [g](const at::Tensor& t) { return g->all_gather_cat(t); }};
}

}  // namespace lathe::dist
