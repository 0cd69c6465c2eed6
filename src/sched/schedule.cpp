// Schedules: warmup + one of the decay shapes, evaluated in closed form at any step; plateau.
#include "lathe/sched/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "lathe/config/optim_names.h"
#include "lathe/core/error.h"

namespace lathe::sched {
namespace {

/// Cosine interpolation from `from` (pct 0) to `to` (pct 1).
double cos_anneal(double from, double to, double pct) {
  return to + (from - to) / 2.0 * (std::cos(std::numbers::pi * std::clamp(pct, 0.0, 1.0)) + 1.0);
}

}  // namespace

Schedule::Schedule(config::ScheduleSection spec, double base, int64_t total_steps,
                   int64_t steps_per_epoch)
    : spec_(std::move(spec)),
      base_(base),
      total_steps_(std::max<int64_t>(total_steps, 1)),
      steps_per_epoch_(std::max<int64_t>(steps_per_epoch, 1)) {
  const double total = spec_.interval == "epoch"
                           ? static_cast<double>(total_steps_) / static_cast<double>(steps_per_epoch_)
                           : static_cast<double>(total_steps_);
  warmup_ = spec_.warmup_steps > 0 ? static_cast<double>(spec_.warmup_steps)
                                   : std::round(spec_.warmup_fraction * total);
}

double Schedule::value_at(int64_t step) const {
  const bool per_epoch = spec_.interval == "epoch";
  const auto unit = static_cast<double>(per_epoch ? std::max<int64_t>(step, 0) / steps_per_epoch_
                                                  : std::max<int64_t>(step, 0));
  const double total = per_epoch ? std::ceil(static_cast<double>(total_steps_) /
                                             static_cast<double>(steps_per_epoch_))
                                 : static_cast<double>(total_steps_);
  const auto& s = spec_;
  if (config::schedule_spec(s.name).kind == config::ScheduleKind::onecycle) {
    // torch.optim.lr_scheduler.OneCycleLR(max_lr=base, total_steps, pct_start, anneal 'cos',
    // div_factor, final_div_factor, three_phase=False).
    const double initial = base_ / s.div_factor;
    const double final_value = initial / s.final_div_factor;
    const double up_end = s.pct_start * total - 1.0;
    const double down_end = total - 1.0;
    if (unit <= up_end) return cos_anneal(initial, base_, up_end > 0 ? unit / up_end : 1.0);
    return cos_anneal(base_, final_value, (unit - up_end) / std::max(down_end - up_end, 1.0));
  }
  if (unit < warmup_) {
    const double f0 = s.warmup_start_factor;
    return base_ * (f0 + (1.0 - f0) * unit / warmup_);
  }
  return after_warmup(unit - warmup_, std::max(total - warmup_, 1.0));
}

double Schedule::after_warmup(double v, double total) const {
  const auto& s = spec_;
  const double floor_value = base_ * s.min_ratio;
  // The one table of schedule names (config/optim_names.h): a name without a shape here would
  // not compile cleanly (-Wswitch), and none passes validation to fall through to a default.
  switch (config::schedule_spec(s.name).kind) {
    case config::ScheduleKind::step:
      return base_ * std::pow(s.gamma, std::floor(v / static_cast<double>(s.step_size)));
    case config::ScheduleKind::multistep: {
      const auto passed = std::count_if(s.milestones.begin(), s.milestones.end(),
                                        [&](int64_t m) { return static_cast<double>(m) <= v; });
      return base_ * std::pow(s.gamma, static_cast<double>(passed));
    }
    case config::ScheduleKind::exponential:
      return base_ * std::pow(s.gamma, v);
    case config::ScheduleKind::cosine:
      return cos_anneal(base_, floor_value, v / total);
    case config::ScheduleKind::polynomial:
      return floor_value +
             (base_ - floor_value) * std::pow(1.0 - std::min(v, total) / total, s.power);
    case config::ScheduleKind::wsd: {
      const double decay = std::max(std::round(s.decay_fraction * total), 1.0);
      const double stable = total - decay;
      if (v < stable) return base_;
      return base_ + (floor_value - base_) * std::min((v - stable) / decay, 1.0);
    }
    case config::ScheduleKind::constant:
    case config::ScheduleKind::plateau:  // scaled by Plateau
    case config::ScheduleKind::none:
      return base_;
    case config::ScheduleKind::onecycle:  // handled before warmup in value_at
      break;
  }
  throw ConfigError(fmt::format("schedule '{}' has no shape after warmup", s.name));
}

Plateau::Plateau(config::ScheduleSection spec)
    : spec_(std::move(spec)), maximize_(spec_.mode == "max") {}

bool Plateau::observe(double value) {
  if (!std::isfinite(value)) return false;
  const bool maximize = maximize_;
  const bool better =
      !state_.has_best ||
      (maximize ? value > state_.best * (1.0 + spec_.threshold * (state_.best >= 0 ? 1 : -1))
                : value < state_.best * (1.0 - spec_.threshold * (state_.best >= 0 ? 1 : -1)));
  if (better) {
    state_.best = value;
    state_.has_best = true;
    state_.bad = 0;
    return false;
  }
  if (++state_.bad > spec_.patience) {
    state_.scale *= spec_.factor;
    state_.bad = 0;
    return true;
  }
  return false;
}

}  // namespace lathe::sched
