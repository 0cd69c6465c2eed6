// Optimizer factory, parameter groups and the hyperparameter setters schedules call.
#include "lathe/optim/optimizer.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <map>
#include <tuple>

#include "lathe/config/optim_names.h"
#include "lathe/core/error.h"
#include "lathe/optim/fused_adamw.h"

namespace lathe::optim {
namespace {

std::unique_ptr<torch::optim::OptimizerOptions> options_for(const config::OptimSection& cfg,
                                                            double wd) {
  namespace o = torch::optim;
  const auto betas = std::make_tuple(cfg.betas[0], cfg.betas[1]);
  switch (config::optimizer_spec(cfg.name, "optim.name").kind) {  // the one table of names
    case config::OptimizerKind::sgd:
      return std::make_unique<o::SGDOptions>(
          o::SGDOptions(cfg.lr).momentum(cfg.momentum).nesterov(cfg.nesterov).weight_decay(wd));
    case config::OptimizerKind::adam:
      return std::make_unique<o::AdamOptions>(
          o::AdamOptions(cfg.lr).betas(betas).eps(cfg.eps).weight_decay(wd));
    case config::OptimizerKind::adamw:
      return std::make_unique<o::AdamWOptions>(
          o::AdamWOptions(cfg.lr).betas(betas).eps(cfg.eps).weight_decay(wd));
    case config::OptimizerKind::rmsprop:
      return std::make_unique<o::RMSpropOptions>(o::RMSpropOptions(cfg.lr)
                                                     .alpha(cfg.alpha)
                                                     .eps(cfg.eps)
                                                     .momentum(cfg.momentum)
                                                     .weight_decay(wd));
  }
  throw ConfigError(fmt::format("optim.name: '{}' has no optimizer", cfg.name));  // unreachable
}

/// optim.fused: auto picks the fused kernel where ATen has one — parameters on CUDA or the CPU
/// (one multi-tensor call per group instead of ~10 small ops per parameter).
bool use_fused(const config::OptimSection& cfg,
               const std::vector<torch::optim::OptimizerParamGroup>& groups) {
  if (cfg.fused == "true") return true;
  if (cfg.fused == "false") return false;
  return !groups.empty() && !groups.front().params().empty() &&
         (groups.front().params().front().is_cuda() || groups.front().params().front().is_cpu());
}

}  // namespace

OptimizerBundle::OptimizerBundle() = default;
OptimizerBundle::~OptimizerBundle() = default;
OptimizerBundle::OptimizerBundle(OptimizerBundle&&) noexcept = default;
OptimizerBundle& OptimizerBundle::operator=(OptimizerBundle&&) noexcept = default;

OptimizerBundle make_optimizer(const config::OptimSection& cfg, torch::nn::Module& module,
                               const GroupRules& rules) {
  namespace o = torch::optim;
  LATHE_CHECK(!(cfg.name == "sgd" && cfg.nesterov && cfg.momentum <= 0), ConfigError,
              "optim.nesterov needs optim.momentum > 0 (got {})", cfg.momentum);
  LATHE_CHECK(cfg.layer_decay == 1.0 || rules.layer_of, ConfigError,
              "optim.layer_decay = {} needs the model's layer structure (which transformer layer "
              "each parameter is in); this model gives none: set optim.layer_decay=1",
              cfg.layer_decay);
  // Groups by (layer id, head?, decays?), in a fixed order so checkpoints line up; without
  // layer decay every parameter is in layer 0: (head, decays), (head, not), (backbone, ...).
  struct Group {
    std::vector<at::Tensor> params;
    double lr_scale;
    bool decays;
  };
  const double backbone = rules.head.empty() ? 1.0 : rules.backbone_lr_scale;
  std::map<std::tuple<int64_t, bool, bool>, Group> groups;
  size_t trainable = 0;
  for (auto& item : module.named_parameters()) {
    auto& p = item.value();
    if (!p.requires_grad() && !rules.include_frozen) continue;
    trainable += p.requires_grad() ? 1 : 0;
    bool is_head = rules.head.empty();
    for (const auto& pattern : rules.head) is_head = is_head || config::matches_pattern(item.key(), pattern);
    const int64_t layer = cfg.layer_decay == 1.0 ? 0 : rules.layer_of(item.key());
    const bool decays = p.dim() >= 2;
    const double scale = (is_head ? 1.0 : backbone) *
                         std::pow(cfg.layer_decay, static_cast<double>(rules.num_layers + 1 - layer));
    groups.try_emplace({layer, !is_head, !decays}, Group{{}, scale, decays})
        .first->second.params.push_back(p);
  }
  LATHE_CHECK(trainable > 0, TrainError,
              "the model has no trainable parameters (all frozen?); nothing to optimize");

  OptimizerBundle bundle;
  bundle.kind = cfg.name;
  std::vector<o::OptimizerParamGroup> param_groups;
  for (auto& [key, g] : groups) {
    auto options = options_for(cfg, g.decays ? cfg.weight_decay : 0.0);
    options->set_lr(cfg.lr * g.lr_scale);
    param_groups.emplace_back(g.params, std::move(options));
    bundle.lr_scale.push_back(g.lr_scale);
    bundle.decays.push_back(g.decays);
  }
  const auto defaults = options_for(cfg, cfg.weight_decay);
  switch (config::optimizer_spec(cfg.name, "optim.name").kind) {
    case config::OptimizerKind::sgd:
      bundle.optimizer =
          std::make_unique<o::SGD>(param_groups, static_cast<o::SGDOptions&>(*defaults));
      break;
    case config::OptimizerKind::adam:
      bundle.optimizer =
          std::make_unique<o::Adam>(param_groups, static_cast<o::AdamOptions&>(*defaults));
      break;
    case config::OptimizerKind::adamw:
      if (use_fused(cfg, param_groups))
        bundle.optimizer =
            std::make_unique<FusedAdamW>(param_groups, static_cast<o::AdamWOptions&>(*defaults));
      else
        bundle.optimizer =
            std::make_unique<o::AdamW>(param_groups, static_cast<o::AdamWOptions&>(*defaults));
      break;
    case config::OptimizerKind::rmsprop:
      bundle.optimizer =
          std::make_unique<o::RMSprop>(param_groups, static_cast<o::RMSpropOptions&>(*defaults));
      break;
  }
  return bundle;
}

void set_hyperparameters(OptimizerBundle& bundle, double lr, double momentum,
                         double weight_decay) {
  namespace o = torch::optim;
  auto& groups = bundle.optimizer->param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    auto& opts = groups[g].options();
    opts.set_lr(lr * (g < bundle.lr_scale.size() ? bundle.lr_scale[g] : 1.0));
    const bool decays = g < bundle.decays.size() && bundle.decays[g];
    const double wd = std::isnan(weight_decay) || !decays ? NAN : weight_decay;
    if (bundle.kind == "sgd") {
      auto& s = static_cast<o::SGDOptions&>(opts);
      if (!std::isnan(momentum)) s.momentum(momentum);
      if (!std::isnan(wd)) s.weight_decay(wd);
    } else if (bundle.kind == "adam") {
      auto& a = static_cast<o::AdamOptions&>(opts);
      if (!std::isnan(momentum)) a.betas({momentum, std::get<1>(a.betas())});
      if (!std::isnan(wd)) a.weight_decay(wd);
    } else if (bundle.kind == "adamw") {
      auto& a = static_cast<o::AdamWOptions&>(opts);
      if (!std::isnan(momentum)) a.betas({momentum, std::get<1>(a.betas())});
      if (!std::isnan(wd)) a.weight_decay(wd);
    } else if (bundle.kind == "rmsprop") {
      auto& r = static_cast<o::RMSpropOptions&>(opts);
      if (!std::isnan(momentum)) r.momentum(momentum);
      if (!std::isnan(wd)) r.weight_decay(wd);
    }
  }
}

GroupValues group_values(OptimizerBundle& bundle, size_t g) {
  namespace o = torch::optim;
  auto& opts = bundle.optimizer->param_groups().at(g).options();
  if (bundle.kind == "sgd") {
    auto& s = static_cast<o::SGDOptions&>(opts);
    return {s.lr(), s.momentum(), s.weight_decay()};
  }
  if (bundle.kind == "adam") {
    auto& a = static_cast<o::AdamOptions&>(opts);
    return {a.lr(), std::get<0>(a.betas()), a.weight_decay()};
  }
  if (bundle.kind == "adamw") {
    auto& a = static_cast<o::AdamWOptions&>(opts);
    return {a.lr(), std::get<0>(a.betas()), a.weight_decay()};
  }
  auto& r = static_cast<o::RMSpropOptions&>(opts);
  return {r.lr(), r.momentum(), r.weight_decay()};
}

}  // namespace lathe::optim

namespace lathe::optim {
namespace {

/// `state` as a tensor of `param`'s device and strides (same values, its own dtype); the tensor
/// itself when it already is one. Scalars (step counts) and other shapes stay where they are.
bool place_like(at::Tensor& state, const at::Tensor& param) {
  if (!state.defined() || state.sizes() != param.sizes()) return false;
  if (state.device() == param.device() && state.strides() == param.strides()) return false;
  at::Tensor placed = at::empty_strided(param.sizes(), param.strides(),
                                        state.options().device(param.device()));
  placed.copy_(state);
  state = placed;
  return true;
}

}  // namespace

int64_t place_state_like_params(torch::optim::Optimizer& optimizer) {
  namespace to = torch::optim;
  int64_t moved = 0;
  auto& states = optimizer.state();
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params()) {
      auto it = states.find(p.unsafeGetTensorImpl());
      if (it == states.end()) continue;
      const auto move = [&](const at::Tensor& t, auto setter) {
        at::Tensor v = t;
        if (place_like(v, p)) {
          setter(v);
          ++moved;
        }
      };
      to::OptimizerParamState* s = it->second.get();
      if (auto* a = dynamic_cast<to::AdamWParamState*>(s)) {
        move(a->exp_avg(), [&](const at::Tensor& v) { a->exp_avg(v); });
        move(a->exp_avg_sq(), [&](const at::Tensor& v) { a->exp_avg_sq(v); });
        move(a->max_exp_avg_sq(), [&](const at::Tensor& v) { a->max_exp_avg_sq(v); });
      } else if (auto* b = dynamic_cast<to::AdamParamState*>(s)) {
        move(b->exp_avg(), [&](const at::Tensor& v) { b->exp_avg(v); });
        move(b->exp_avg_sq(), [&](const at::Tensor& v) { b->exp_avg_sq(v); });
        move(b->max_exp_avg_sq(), [&](const at::Tensor& v) { b->max_exp_avg_sq(v); });
      } else if (auto* c = dynamic_cast<to::SGDParamState*>(s)) {
        move(c->momentum_buffer(), [&](const at::Tensor& v) { c->momentum_buffer(v); });
      } else if (auto* d = dynamic_cast<to::RMSpropParamState*>(s)) {
        move(d->square_avg(), [&](const at::Tensor& v) { d->square_avg(v); });
        move(d->momentum_buffer(), [&](const at::Tensor& v) { d->momentum_buffer(v); });
        move(d->grad_avg(), [&](const at::Tensor& v) { d->grad_avg(v); });
      } else if (auto* e = dynamic_cast<to::AdagradParamState*>(s)) {
        move(e->sum(), [&](const at::Tensor& v) { e->sum(v); });
      }
    }
  return moved;
}

}  // namespace lathe::optim
