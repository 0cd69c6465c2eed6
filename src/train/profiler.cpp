// ProfilerCallback: turns LibTorch's Kineto profiler on and off around a window of steps, and
// sums its events into tables of operators, model parts and kernels by self time.
#include "lathe/train/profiler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <unordered_set>

#include <ATen/record_function.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_kineto.h>

#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/log.h"
#include "lathe/train/trainer.h"

namespace lathe::train {
namespace {

namespace kineto = torch::autograd::profiler;
namespace prof = torch::profiler::impl;

/// One host event with its place in the nesting of its thread.
struct Span {
  std::string name;
  uint64_t start = 0, end = 0;
  bool user_scope = false;
  double children_us = 0;  ///< direct children's time (every kind)
  double nested_parts_us = 0;  ///< time of the nearest model parts nested in it (user scopes)
};

void add(std::map<std::string, ProfileRow>& table, const std::string& name, double self_us,
         double total_us) {
  auto& row = table[name];
  row.name = name;
  row.calls += 1;
  row.self_us += self_us;
  row.total_us += total_us;
}

std::vector<ProfileRow> sorted(std::map<std::string, ProfileRow> table) {
  std::vector<ProfileRow> rows;
  for (auto& [name, row] : table) rows.push_back(std::move(row));
  std::stable_sort(rows.begin(), rows.end(),
                   [](const ProfileRow& a, const ProfileRow& b) { return a.self_us > b.self_us; });
  return rows;
}

/// Sums Kineto's events: host events nest per thread by their time spans (a parent starts no
/// later and ends no earlier than its children), which gives each its self time.
ProfileSummary summarize(const std::vector<kineto::KinetoEvent>& events, int64_t steps) {
  std::map<uint64_t, std::vector<Span>> threads;
  std::map<std::string, ProfileRow> kernels;
  uint64_t first = UINT64_MAX, last = 0;
  for (const auto& e : events) {
    if (e.deviceType() != c10::DeviceType::CPU) {  // a device kernel or copy: its own time
      if (!e.isAsync()) add(kernels, e.name(), e.durationNs() / 1e3, e.durationNs() / 1e3);
      continue;
    }
    Span s{e.name(), e.startNs(), e.endNs(),
           e.scope() == static_cast<uint8_t>(at::RecordScope::USER_SCOPE)};
    first = std::min(first, s.start);
    last = std::max(last, s.end);
    threads[e.startThreadId()].push_back(std::move(s));
  }

  std::map<std::string, ProfileRow> operators, modules;
  for (auto& [tid, spans] : threads) {
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
      return a.start != b.start ? a.start < b.start : a.end > b.end;  // parents first
    });
    std::vector<size_t> open;   // the spans enclosing the current one, innermost last
    std::vector<size_t> parts;  // the model parts among them, innermost last
    const auto close_until = [&](uint64_t t) {
      while (!open.empty() && spans[open.back()].end <= t) {
        const Span& s = spans[open.back()];
        const double total = (s.end - s.start) / 1e3;
        if (s.user_scope) {
          add(modules, s.name, total - s.nested_parts_us, total);
          parts.pop_back();
        } else {
          add(operators, s.name, total - s.children_us, total);
        }
        open.pop_back();
      }
    };
    for (size_t i = 0; i < spans.size(); ++i) {
      close_until(spans[i].start);
      const double total = (spans[i].end - spans[i].start) / 1e3;
      if (!open.empty()) spans[open.back()].children_us += total;
      if (spans[i].user_scope) {
        if (!parts.empty()) spans[parts.back()].nested_parts_us += total;
        parts.push_back(i);
      }
      open.push_back(i);
    }
    close_until(UINT64_MAX);
  }

  ProfileSummary summary;
  summary.operators = sorted(std::move(operators));
  summary.modules = sorted(std::move(modules));
  summary.kernels = sorted(std::move(kernels));
  summary.steps = steps;
  summary.wall_us = last > first ? (last - first) / 1e3 : 0;
  return summary;
}

nlohmann::ordered_json rows_json(const std::vector<ProfileRow>& rows) {
  auto out = nlohmann::ordered_json::array();
  for (const auto& r : rows)
    out.push_back({{"name", r.name}, {"calls", r.calls}, {"self_us", r.self_us},
                   {"total_us", r.total_us}});
  return out;
}

}  // namespace

std::string format_profile_table(const std::string& title, const std::vector<ProfileRow>& rows,
                                 int64_t max_rows) {
  double self_sum = 0;
  for (const auto& r : rows) self_sum += r.self_us;
  std::string out = fmt::format("{}\n{:>10} {:>6} {:>10} {:>8}  {}\n", title, "self ms", "self%",
                                "total ms", "calls", "name");
  const size_t n = std::min(rows.size(), static_cast<size_t>(std::max<int64_t>(max_rows, 0)));
  for (size_t i = 0; i < n; ++i) {
    const auto& r = rows[i];
    out += fmt::format("{:>10.3f} {:>5.1f}% {:>10.3f} {:>8}  {}\n", r.self_us / 1e3,
                       self_sum > 0 ? 100 * r.self_us / self_sum : 0.0, r.total_us / 1e3, r.calls,
                       r.name);
  }
  if (rows.size() > n) out += fmt::format("  ... {} more in profile.json\n", rows.size() - n);
  return out;
}

ProfilerCallback::ProfilerCallback(int64_t first, int64_t last, std::filesystem::path dir,
                                   c10::Device device, int64_t rows)
    : first_(first), last_(last), rows_(rows), dir_(std::move(dir)), device_(device) {
  LATHE_CHECK(first >= 1 && first <= last, ConfigError,
              "trainer.profile.steps = [{}, {}] must be [first, last] with 1 <= first <= last",
              first, last);
}

ProfilerCallback::~ProfilerCallback() {
  if (recording_) {  // fit ended by an exception: leave no profiler running in the process
    try {
      kineto::disableProfiler();
    } catch (...) {
    }
  }
}

void ProfilerCallback::start() {
  LATHE_CHECK(!prof::profilerEnabled(), TrainError,
              "trainer.profile: another profiler is already running in this process; only one "
              "can record at a time");
  // Kineto logs its own probe failures (no CUDA driver on a CPU machine) as errors on stderr;
  // lathe reports what matters itself. A KINETO_LOG_LEVEL the user set stays.
  setenv("KINETO_LOG_LEVEL", "5", /*overwrite=*/0);
  std::set<prof::ActivityType> activities{prof::ActivityType::CPU};
  if (device_.is_cuda()) activities.insert(prof::ActivityType::CUDA);
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO, /*report_input_shapes=*/false,
                                    /*profile_memory=*/false, /*with_stack=*/false);
  kineto::prepareProfiler(config, activities);
  kineto::enableProfiler(config, activities);
  recording_ = true;
}

void ProfilerCallback::finish(int64_t last_step) {
  recording_ = false;
  const int64_t steps = last_step - first_ + 1;
  std::unique_ptr<kineto::ProfilerResult> result;
  try {
    result = kineto::disableProfiler();
  } catch (const std::exception& e) {
    throw TrainError(fmt::format("trainer.profile: stopping LibTorch's profiler after step {} "
                                 "failed: {}",
                                 last_step, e.what()));
  }
  summary_ = summarize(result->events(), steps);

  std::filesystem::create_directories(dir_);
  const auto trace = dir_ / "trace.json";
  const auto partial = dir_ / "trace.json.partial";
  try {  // Kineto writes the file itself: to a side name, renamed when complete
    result->save(partial.string());
  } catch (const std::exception& e) {
    throw IoError(fmt::format("trainer.profile: writing the trace {} failed: {}", trace.string(),
                              e.what()));
  }
  std::filesystem::rename(partial, trace);

  const std::string window = fmt::format("steps {} to {}", first_, last_step);
  std::string text = fmt::format(
      "Profile of {} ({} steps, {:.1f} ms of host time from the first event to the last; "
      "device {}). Trace: {}\n\n",
      window, steps, summary_.wall_us / 1e3, device_.str(), trace.filename().string());
  text += format_profile_table("Operators by self time", summary_.operators, rows_) + "\n";
  text += format_profile_table("Model parts by self time (forward; time outside nested parts)",
                               summary_.modules, rows_);
  if (!summary_.kernels.empty())
    text += "\n" + format_profile_table("Device kernels by time", summary_.kernels, rows_);
  write_file_atomic(dir_ / "profile.txt", text);

  nlohmann::ordered_json j = {{"first_step", first_},          {"last_step", last_step},
                              {"device", device_.str()},        {"wall_us", summary_.wall_us},
                              {"operators", rows_json(summary_.operators)},
                              {"modules", rows_json(summary_.modules)},
                              {"kernels", rows_json(summary_.kernels)}};
  write_file_atomic(dir_ / "profile.json", j.dump(1));

  std::string top;
  for (size_t i = 0; i < std::min<size_t>(3, summary_.operators.size()); ++i)
    top += fmt::format("{}{} {:.1f} ms", i ? ", " : "", summary_.operators[i].name,
                       summary_.operators[i].self_us / 1e3);
  log::info("profile of {}: {} (top operators by self time: {})", window,
            (dir_ / "profile.txt").string(), top);
}

void ProfilerCallback::on_fit_start(Trainer& trainer) {
  const int64_t next = trainer.global_step() + 1;
  if (next >= first_ && next <= last_) start();
}

void ProfilerCallback::on_train_step_end(Trainer& trainer, int64_t /*batch*/,
                                         int64_t /*batches*/) {
  const int64_t step = trainer.global_step();
  if (recording_ && step >= last_)
    finish(step);
  else if (!recording_ && step + 1 == first_)
    start();
}

void ProfilerCallback::on_fit_end(Trainer& trainer) {
  if (recording_) {
    finish(trainer.global_step());  // the run ended inside the window
  } else if (summary_.steps == 0 && trainer.global_step() < first_) {
    log::warn("trainer.profile: the run ended after step {}, before the profile's first step {}; "
              "nothing was recorded (lower trainer.profile.steps)",
              trainer.global_step(), first_);
  }
}

}  // namespace lathe::train
