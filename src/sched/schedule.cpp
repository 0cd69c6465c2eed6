// Learning-rate schedules: constant, cosine with warmup, one-cycle; pure functions of the step.
#include "lathe/sched/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "lathe/core/error.h"

namespace lathe::sched {
namespace {

/// Cosine interpolation from `from` (pct 0) to `to` (pct 1).
double cos_anneal(double from, double to, double pct) {
  return to + (from - to) / 2.0 * (std::cos(std::numbers::pi * std::clamp(pct, 0.0, 1.0)) + 1.0);
}

}  // namespace

double LrSchedule::value_at(int64_t step) const {
  const auto s = static_cast<double>(std::max<int64_t>(step, 0));
  const auto warm = static_cast<double>(warmup_steps);
  const auto total = static_cast<double>(std::max<int64_t>(total_steps, 1));
  if (kind == "onecycle") {
    // torch.optim.lr_scheduler.OneCycleLR(max_lr=base, total_steps, pct_start, anneal 'cos',
    // div_factor=25, final_div_factor=1e4, three_phase=False).
    const double initial = base / 25.0;
    const double final_lr = initial / 1e4;
    const double up_end = warm - 1.0;
    const double down_end = total - 1.0;
    if (s <= up_end) return cos_anneal(initial, base, up_end > 0 ? s / up_end : 1.0);
    return cos_anneal(base, final_lr, (s - up_end) / std::max(down_end - up_end, 1.0));
  }
  if (warmup_steps > 0 && s < warm) return base * (s + 1.0) / warm;
  if (kind == "cosine") {
    const double pct = (s - warm) / std::max(total - warm, 1.0);
    return cos_anneal(base, base * min_ratio, pct);
  }
  return base;  // constant
}

LrSchedule make_lr_schedule(const std::string& kind, double base, int64_t total_steps,
                            double warmup_fraction, double min_ratio) {
  LATHE_CHECK(kind == "constant" || kind == "cosine" || kind == "onecycle", ConfigError,
              "optim.schedule: unknown schedule '{}'; expected constant, cosine or onecycle", kind);
  LrSchedule s;
  s.kind = kind;
  s.base = base;
  s.total_steps = std::max<int64_t>(total_steps, 1);
  s.warmup_steps =
      static_cast<int64_t>(std::llround(warmup_fraction * static_cast<double>(s.total_steps)));
  s.min_ratio = min_ratio;
  return s;
}

}  // namespace lathe::sched
