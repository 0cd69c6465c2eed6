// FusedAdamW::step: gather each group's parameters, gradients and moments by device and dtype,
// then one at::_fused_adamw_ call per bucket; in capturable mode with device-side step counts and
// lr so the step can be recorded in a CUDA graph.
#include "lathe/optim/fused_adamw.h"

#include <map>
#include <optional>
#include <tuple>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "lathe/core/error.h"

namespace lathe::optim {

void FusedAdamW::sync_hyperparameters() {
  if (!capturable_) return;
  lr_.resize(param_groups_.size());
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    auto& group = param_groups_[g];
    if (group.params().empty()) continue;
    const double lr = static_cast<torch::optim::AdamWOptions&>(group.options()).lr();
    if (!lr_[g].defined())
      lr_[g] = at::empty({}, group.params().front().options().dtype(at::kFloat));
    lr_[g].fill_(lr);
  }
  for (auto& group : param_groups_)
    for (auto& p : group.params()) {
      auto it = state_.find(p.unsafeGetTensorImpl());
      auto ds = device_steps_.find(p.unsafeGetTensorImpl());
      if (it == state_.end() || ds == device_steps_.end()) continue;
      const int64_t host = static_cast<torch::optim::AdamWParamState&>(*it->second).step();
      if (ds->second.host != host) {  // a loaded state moved the count
        ds->second.step.fill_(static_cast<double>(host));
        ds->second.host = host;
      }
    }
}

void FusedAdamW::count_replayed_step() {
  if (!capturable_) return;  // only a recorded (capturable) step is replayed
  for (auto& group : param_groups_)
    for (auto& p : group.params()) {
      auto it = state_.find(p.unsafeGetTensorImpl());
      auto ds = device_steps_.find(p.unsafeGetTensorImpl());
      if (it == state_.end() || ds == device_steps_.end()) continue;
      auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
      st.step(st.step() + 1);
      ds->second.host = st.step();
    }
}

void FusedAdamW::set_amp(at::Tensor grad_scale, at::Tensor found_inf) {
  grad_scale_ = std::move(grad_scale);
  found_inf_ = std::move(found_inf);
}

void FusedAdamW::sync_host_steps() {
  for (auto& group : param_groups_)
    for (auto& p : group.params()) {
      auto it = state_.find(p.unsafeGetTensorImpl());
      auto ds = device_steps_.find(p.unsafeGetTensorImpl());
      if (it == state_.end() || ds == device_steps_.end() || !ds->second.step.defined()) continue;
      const auto count = static_cast<int64_t>(ds->second.step.item<float>());
      static_cast<torch::optim::AdamWParamState&>(*it->second).step(count);
      ds->second.host = count;
    }
}

std::pair<torch::optim::AdamWParamState*, at::Tensor*> FusedAdamW::state_of(const at::Tensor& p) {
  void* key = p.unsafeGetTensorImpl();
  auto it = state_.find(key);
  auto ds = device_steps_.find(key);
  if (it == state_.end() || ds == device_steps_.end()) {
    LATHE_CHECK(!state_frozen_, TrainError,
                "FusedAdamW: a parameter of shape {} got its first gradient inside a recorded "
                "(CUDA graph) step; its optimizer state would be zeroed on every replay. Call "
                "init_state() before recording, or set trainer.cuda_graphs=false",
                p.sizes());
  }
  if (it == state_.end()) {
    const auto& o = static_cast<torch::optim::AdamWOptions&>(param_groups_.front().options());
    auto st = std::make_unique<torch::optim::AdamWParamState>();
    st->step(0);
    st->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
    st->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
    if (o.amsgrad()) st->max_exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
    it = state_.emplace(key, std::move(st)).first;
  }
  if (ds == device_steps_.end())
    ds = device_steps_.emplace(key, DeviceSteps{at::empty({}, p.options().dtype(at::kFloat)), -1})
             .first;
  auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
  // The count the kernel reads lives beside the parameter; it is refilled from the host count
  // only when that moved (a new state, a loaded one).
  if (ds->second.host != st.step()) {
    ds->second.step.fill_(static_cast<double>(st.step()));
    ds->second.host = st.step();
  }
  return {&st, &ds->second.step};
}

void FusedAdamW::init_state() {
  torch::NoGradGuard no_grad;
  for (auto& group : param_groups_)
    for (auto& p : group.params())
      if (p.requires_grad()) state_of(p);
}

at::Tensor FusedAdamW::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  if (capturable_ && lr_.size() != param_groups_.size()) sync_hyperparameters();
  const at::Tensor grad_scale = std::exchange(grad_scale_, at::Tensor());
  const at::Tensor found_inf = std::exchange(found_inf_, at::Tensor());
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    auto& group = param_groups_[g];
    auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
    struct Bucket {
      std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps;
    };
    // One bucket per (device type, device index, dtype): the kernel wants them uniform.
    std::map<std::tuple<int, int, int>, Bucket> buckets;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto [st, device_step] = state_of(p);
      Bucket& b = buckets[{static_cast<int>(p.device().type()), p.device().index(),
                           static_cast<int>(p.scalar_type())}];
      b.params.push_back(p);
      b.grads.push_back(p.grad());
      b.exp_avgs.push_back(st->exp_avg());
      b.exp_avg_sqs.push_back(st->exp_avg_sq());
      if (o.amsgrad()) b.max_exp_avg_sqs.push_back(st->max_exp_avg_sq());
      // The kernel reads the already-incremented step as a float tensor (torch.optim's
      // _fused_adamw increments before calling it); the host count follows, and a step skipped
      // for found_inf is taken back on the device only (sync_host_steps() reconciles).
      st->step(st->step() + 1);
      device_steps_.at(p.unsafeGetTensorImpl()).host = st->step();
      b.steps.push_back(*device_step);
    }
    const auto [beta1, beta2] = o.betas();
    const auto opt_scale = grad_scale.defined() ? std::optional<at::Tensor>(grad_scale)
                                                : std::optional<at::Tensor>();
    const auto opt_inf = found_inf.defined() ? std::optional<at::Tensor>(found_inf)
                                             : std::optional<at::Tensor>();
    for (auto& [key, b] : buckets) {
      at::_foreach_add_(b.steps, 1.0);  // on the device: a recorded step advances its counts
      if (capturable_) {
        at::_fused_adamw_(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, b.max_exp_avg_sqs, b.steps,
                          lr_[g], beta1, beta2, o.weight_decay(), o.eps(), o.amsgrad(),
                          /*maximize=*/false, opt_scale, opt_inf);
      } else {
        at::_fused_adamw_(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, b.max_exp_avg_sqs, b.steps,
                          o.lr(), beta1, beta2, o.weight_decay(), o.eps(), o.amsgrad(),
                          /*maximize=*/false, opt_scale, opt_inf);
      }
      // torch.optim's _fused_adamw: a skipped step does not count.
      if (found_inf.defined())
        at::_foreach_sub_(b.steps, std::vector<at::Tensor>(b.steps.size(), found_inf));
    }
  }
  return loss;
}

}  // namespace lathe::optim
