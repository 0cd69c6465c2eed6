// Hyperparameter schedules (lr, momentum, weight decay) as pure functions of the global step,
// and reduce-on-plateau, the one schedule that keeps state.
#pragma once

#include <cstdint>
#include <string>

#include "lathe/config/config.h"

namespace lathe::sched {

/// The value of one hyperparameter at every optimizer step of a run, from a ScheduleSection:
/// an optional linear warmup (torch LinearLR from base·warmup_start_factor) into constant, step,
/// multistep, exponential, cosine (floor base·min_ratio), polynomial, warmup-stable-decay or
/// plateau (constant here; Plateau scales it); or onecycle (torch OneCycleLR, its own warmup).
/// With interval "epoch" the schedule moves once per epoch, as torch schedulers stepped per epoch.
/// Past the end, cosine and polynomial hold their final value.
///
///   config::ScheduleSection spec;
///   spec.name = "cosine"; spec.warmup_fraction = 0.05;
///   Schedule lr(spec, /*base=*/3e-4, /*total_steps=*/10000, /*steps_per_epoch=*/500);
///   double v = lr.value_at(step);   // same step, same value: resuming changes nothing
class Schedule {
 public:
  Schedule() = default;
  Schedule(config::ScheduleSection spec, double base, int64_t total_steps, int64_t steps_per_epoch);

  double value_at(int64_t step) const;
  double base() const { return base_; }
  const config::ScheduleSection& spec() const { return spec_; }

 private:
  double after_warmup(double u, double total) const;

  config::ScheduleSection spec_;
  double base_ = 0;
  int64_t total_steps_ = 1;
  int64_t steps_per_epoch_ = 1;
  double warmup_ = 0;  ///< in interval units
};

/// Reduce-on-plateau (torch ReduceLROnPlateau, relative threshold, no cooldown): observe() takes
/// each validation value; after more than `patience` observations without a relative improvement
/// of `threshold`, scale() is multiplied by `factor`.
class Plateau {
 public:
  struct State {
    double best = 0;
    bool has_best = false;
    int64_t bad = 0;
    double scale = 1.0;
  };

  explicit Plateau(config::ScheduleSection spec = {});
  /// Whether higher monitored values are better: mode max / min, or — for mode auto — what the
  /// caller says (the Trainer asks its Task about the monitored metric).
  void set_maximize(bool maximize) { maximize_ = maximize; }
  bool maximize() const { return maximize_; }
  /// Feeds one validation value; returns true when it reduced the scale.
  bool observe(double value);
  double scale() const { return state_.scale; }
  const State& state() const { return state_; }
  void set_state(const State& s) { state_ = s; }

 private:
  config::ScheduleSection spec_;
  bool maximize_;
  State state_;
};

}  // namespace lathe::sched
