// The tables of the optim section's named choices: optimizers and schedules.
#include "lathe/config/optim_names.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lathe/config/params.h"
#include "lathe/core/error.h"

namespace lathe::config {
namespace {

/// The spec named `name` in `specs`, or a ConfigError "WHERE: KEY = 'x' must be one of ...".
template <class Spec>
const Spec& find_spec(const std::vector<Spec>& specs, const std::string& name,
                      const std::string& where, const std::string& key) {
  std::vector<std::string> known;
  for (const auto& s : specs) {
    if (s.name == name) return s;
    known.emplace_back(s.name);
  }
  const std::string hint = closest_key(name, known);
  throw ConfigError(fmt::format("{}{} = '{}' must be one of {}{}",
                                where.empty() ? "" : where + ": ", key, name,
                                fmt::join(known, ", "),
                                hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
}

}  // namespace

const std::vector<OptimizerSpec>& optimizers() {
  static const std::vector<OptimizerSpec> specs = {
      {"sgd", OptimizerKind::sgd, "SGD with momentum and Nesterov"},
      {"adam", OptimizerKind::adam, "Adam (L2 weight decay)"},
      {"adamw", OptimizerKind::adamw, "AdamW (decoupled weight decay; fused kernel by default)"},
      {"rmsprop", OptimizerKind::rmsprop, "RMSprop"},
  };
  return specs;
}

const OptimizerSpec& optimizer_spec(const std::string& name, const std::string& where) {
  return find_spec(optimizers(), name, where, "optim.name");
}

const std::vector<ScheduleSpec>& schedules() {
  static const std::vector<ScheduleSpec> specs = {
      {"constant", ScheduleKind::constant, "the base value (after warmup)"},
      {"step", ScheduleKind::step, "× gamma every step_size (torch StepLR)"},
      {"multistep", ScheduleKind::multistep, "× gamma at each milestone (torch MultiStepLR)"},
      {"exponential", ScheduleKind::exponential, "× gamma every step (torch ExponentialLR)"},
      {"cosine", ScheduleKind::cosine, "cosine to min_ratio (torch CosineAnnealingLR)"},
      {"polynomial", ScheduleKind::polynomial, "polynomial decay (torch PolynomialLR)"},
      {"onecycle", ScheduleKind::onecycle, "torch OneCycleLR"},
      {"wsd", ScheduleKind::wsd, "warmup, stable, linear decay over decay_fraction"},
      {"plateau", ScheduleKind::plateau, "scaled by factor when the monitor stalls"},
      {"none", ScheduleKind::none, "the optimizer's value stays (momentum, weight decay only)"},
  };
  return specs;
}

const ScheduleSpec& schedule_spec(const std::string& name, const std::string& where,
                                  const std::string& key) {
  return find_spec(schedules(), name, where, key);
}

}  // namespace lathe::config
