// The named choices of the optim section — optimizers and schedules — each in one table that
// config validation and the code dispatching on the name (optim, sched) both read.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace lathe::config {

/// optim.name values. optim::make_optimizer switches over this enum without a default, so an
/// optimizer listed here without a factory does not compile cleanly (-Wswitch), and a name not
/// listed here never validates.
enum class OptimizerKind { sgd, adam, adamw, rmsprop };

struct OptimizerSpec {
  std::string_view name;
  OptimizerKind kind;
  std::string_view description;
};

/// Every optimizer, in a fixed order.
const std::vector<OptimizerSpec>& optimizers();
/// The optimizer named `name`; a ConfigError naming `where` and listing the optimizers otherwise.
///
///   switch (lathe::config::optimizer_spec(cfg.name).kind) { case OptimizerKind::sgd: ... }
const OptimizerSpec& optimizer_spec(const std::string& name, const std::string& where = "");

/// Schedule names (optim.schedule, momentum_schedule, weight_decay_schedule). sched::Schedule
/// switches over this enum without a default.
enum class ScheduleKind {
  constant,
  step,
  multistep,
  exponential,
  cosine,
  polynomial,
  onecycle,
  wsd,
  plateau,
  none
};

struct ScheduleSpec {
  std::string_view name;
  ScheduleKind kind;
  std::string_view description;
};

/// Every schedule, in a fixed order.
const std::vector<ScheduleSpec>& schedules();
/// The schedule named `name`; a ConfigError naming `where` and `key` (which schedule) and listing
/// the schedules otherwise.
const ScheduleSpec& schedule_spec(const std::string& name, const std::string& where = "",
                                  const std::string& key = "optim.schedule.name");

}  // namespace lathe::config
