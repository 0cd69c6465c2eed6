// Learning-rate schedules as pure functions of the global step.
#pragma once

#include <cstdint>
#include <string>

namespace lathe::sched {

/// A learning-rate schedule over `total_steps` optimizer steps. value_at(step) depends on the
/// step alone, so resuming at any step gives the same values as the uninterrupted run.
///
/// kinds:
///  - constant: base (after an optional linear warmup from 0)
///  - cosine:   linear warmup over warmup_steps, then cosine from base to base·min_ratio
///  - onecycle: PyTorch's OneCycleLR (cos annealing, div_factor 25, final_div_factor 1e4),
///              rising over warmup_steps (pct_start·total) and falling over the rest
///
///   LrSchedule s{"cosine", 1e-3, 1000, 100, 0.01};
///   double lr = s.value_at(step);
struct LrSchedule {
  std::string kind = "constant";
  double base = 1e-3;
  int64_t total_steps = 1;
  int64_t warmup_steps = 0;
  double min_ratio = 0.0;

  double value_at(int64_t step) const;
};

/// Builds a schedule from config values; an unknown kind is a ConfigError listing the kinds.
LrSchedule make_lr_schedule(const std::string& kind, double base, int64_t total_steps,
                            double warmup_fraction, double min_ratio);

}  // namespace lathe::sched
