// The kernel chooser: LATHE_KERNELS, timing both sides on a shape class's first call, the
// process's choices and the cache file keyed by CPU model, flags and LibTorch version.
#include "lathe/core/kernel_choice.h"

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <utility>

#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/log.h"

namespace lathe::kernels {
namespace {

using nlohmann::json;
using Key = std::pair<std::string, std::string>;  // kernel, shape class (with the threads)

constexpr int kFileFormat = 1;
constexpr int kMaxRounds = 7;           // timed calls a side, at most
constexpr double kRoundsBudgetS = 0.5;  // past three rounds, stop once this much has gone
constexpr double kHardBudgetS = 2.0;    // past one round, stop once this much has gone

// The forced mode (a ScopedMode), or -1 for the environment's.
std::atomic<int> forced{-1};

struct State {
  std::mutex mutex;
  std::optional<Mode> env_mode;  // LATHE_KERNELS, once parsed
  bool file_read = false;
  std::map<Key, Choice> process;  // made or read by this process (logged once each)
  std::map<Key, Choice> in_file;  // this machine's entries in the cache file
  bool write_failed = false;      // warned once
};

State& state() {
  static State s;
  return s;
}

Choice choice_from(const Key& key, const json& entry) {
  Choice c;
  c.kernel = key.first;
  c.shape_class = key.second;
  const std::string side = entry.at("side").get<std::string>();
  LATHE_CHECK(side == "lathe" || side == "aten", Error, "side '{}' is neither lathe nor aten",
              side);
  c.side = side == "lathe" ? Side::lathe : Side::aten;
  c.lathe_ms = entry.at("lathe_ms").get<double>();
  c.aten_ms = entry.at("aten_ms").get<double>();
  return c;
}

/// The cache file's JSON, or an empty object when it is missing, unreadable or corrupt (warned).
json read_cache(const std::filesystem::path& path) {
  std::error_code ec;
  if (path.empty() || !std::filesystem::exists(path, ec)) return json::object();
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  try {
    json j = json::parse(text.str());
    LATHE_CHECK(j.is_object() && j.value("format", 0) == kFileFormat, Error,
                "not format {} of lathe's kernel choices", kFileFormat);
    LATHE_CHECK(j.at("machines").is_object(), Error, "'machines' is not an object");
    return j;
  } catch (const std::exception& e) {
    log::warn(
        "{}: not a kernel-choice file lathe can read ({}); ignoring it: kernels are timed again "
        "and the file rewritten",
        path.string(), e.what());
    return json::object();
  }
}

/// This machine's entries of the cache file; a malformed entry drops the file (warned).
std::map<Key, Choice> machine_entries(const std::filesystem::path& path) {
  const json j = read_cache(path);
  std::map<Key, Choice> out;
  if (!j.contains("machines") || !j["machines"].contains(machine().key())) return out;
  try {
    for (const auto& [name, entry] : j["machines"][machine().key()].at("choices").items()) {
      const auto bar = name.find(" | ");
      LATHE_CHECK(bar != std::string::npos, Error, "choice '{}' has no ' | '", name);
      const Key key{name.substr(0, bar), name.substr(bar + 3)};
      out[key] = choice_from(key, entry);
    }
  } catch (const std::exception& e) {
    log::warn("{}: this machine's kernel choices are malformed ({}); ignoring them", path.string(),
              e.what());
    out.clear();
  }
  return out;
}

void read_file_once(State& s) {
  if (s.file_read) return;
  s.file_read = true;
  s.in_file = machine_entries(cache_file());
}

/// Adds `c` to the cache file, keeping every other entry (the file read again first: another
/// process may have added its own). Written atomically; a failure is warned about once.
void persist(State& s, const Choice& c) {
  const std::filesystem::path path = cache_file();
  if (path.empty()) return;
  try {
    json j = read_cache(path);
    if (!j.contains("machines")) j = {{"format", kFileFormat}, {"machines", json::object()}};
    json& m = j["machines"][machine().key()];
    if (!m.is_object() || !m.contains("choices") || !m["choices"].is_object())
      m = {{"cpu", machine().cpu},
           {"flags", machine().flags},
           {"torch", machine().torch},
           {"choices", json::object()}};
    m["choices"][c.kernel + " | " + c.shape_class] = {
        {"side", side_name(c.side)}, {"lathe_ms", c.lathe_ms}, {"aten_ms", c.aten_ms}};
    write_file_atomic(path, j.dump(2) + "\n");
  } catch (const std::exception& e) {
    if (!s.write_failed)
      log::warn("cannot keep the kernel choices in {} ({}); they last for this process only",
                path.string(), e.what());
    s.write_failed = true;
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Both sides' minimum milliseconds over alternating calls (after one untimed call each).
std::pair<double, double> measure(c10::function_ref<void(Side)> trial) {
  trial(Side::lathe);  // first touches, allocations, choices nested inside a side
  trial(Side::aten);
  double best[2] = {std::numeric_limits<double>::infinity(),
                    std::numeric_limits<double>::infinity()};
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < kMaxRounds; ++round) {
    for (int j = 0; j < 2; ++j) {  // lathe first in even rounds, ATen first in odd ones
      const Side side = (round + j) % 2 == 0 ? Side::lathe : Side::aten;
      const auto t0 = std::chrono::steady_clock::now();
      trial(side);
      best[static_cast<int>(side)] = std::min(best[static_cast<int>(side)], seconds_since(t0));
    }
    const double spent = seconds_since(start);
    if (spent > kHardBudgetS || (round >= 2 && spent > kRoundsBudgetS)) break;
  }
  return {best[0] * 1e3, best[1] * 1e3};
}

void log_choice(const Choice& c, std::string_view how) {
  log::debug("kernel {} ({}): {} runs ({}: lathe {:.3f} ms, ATen {:.3f} ms)", c.kernel,
             c.shape_class, side_name(c.side), how, c.lathe_ms, c.aten_ms);
}

std::string cpuinfo_field(const std::string& text, std::string_view field) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(field, 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    return value;
  }
  return {};
}

}  // namespace

std::string_view side_name(Side side) { return side == Side::lathe ? "lathe" : "aten"; }

std::string_view mode_name(Mode mode) {
  switch (mode) {
    case Mode::lathe:
      return "lathe";
    case Mode::aten:
      return "aten";
    default:
      return "auto";
  }
}

Mode parse_mode(std::string_view value) {
  if (value == "auto") return Mode::automatic;
  if (value == "lathe") return Mode::lathe;
  if (value == "aten") return Mode::aten;
  throw ConfigError(fmt::format(
      "LATHE_KERNELS={}: not a kernel mode; accepted: auto (time lathe's and ATen's kernels on "
      "this machine and run the faster), lathe, aten",
      value));
}

Mode mode() {
  const int f = forced.load();
  if (f >= 0) return static_cast<Mode>(f);
  State& s = state();
  const std::lock_guard lock(s.mutex);
  if (!s.env_mode) {
    const char* env = std::getenv("LATHE_KERNELS");
    s.env_mode = env == nullptr || *env == '\0' ? Mode::automatic : parse_mode(env);
  }
  return *s.env_mode;
}

ScopedMode::ScopedMode(Mode mode) : previous_(forced.exchange(static_cast<int>(mode))) {}
ScopedMode::~ScopedMode() { forced.store(previous_); }

Side choose(std::string_view kernel, std::string_view shape_class,
            c10::function_ref<void(Side)> trial) {
  const Mode m = mode();
  if (m != Mode::automatic) return m == Mode::lathe ? Side::lathe : Side::aten;
  const Key key{std::string(kernel),
                fmt::format("{}, {} thread{}", shape_class, at::get_num_threads(),
                            at::get_num_threads() == 1 ? "" : "s")};
  State& s = state();
  {
    const std::lock_guard lock(s.mutex);
    if (const auto it = s.process.find(key); it != s.process.end()) return it->second.side;
    read_file_once(s);
    if (const auto it = s.in_file.find(key); it != s.in_file.end()) {
      log_choice(it->second, "timed earlier, from the cache file");
      return s.process.emplace(key, it->second).first->second.side;
    }
  }
  // Timed without the lock: a side may make choices of its own (the LSTM's products).
  const auto [lathe_ms, aten_ms] = measure(trial);
  Choice c{key.first, key.second, lathe_ms <= aten_ms ? Side::lathe : Side::aten, lathe_ms,
           aten_ms};
  const std::lock_guard lock(s.mutex);
  const auto [it, inserted] = s.process.emplace(key, c);
  if (inserted) {
    log_choice(c, "timed on this machine");
    s.in_file[key] = c;
    persist(s, c);
  }
  return it->second.side;
}

std::string Machine::key() const { return fmt::format("{} [{}] torch {}", cpu, flags, torch); }

const Machine& machine() {
  static const Machine m = [] {
    Machine out;
    out.torch = TORCH_VERSION;
    std::ifstream in("/proc/cpuinfo");
    std::stringstream text;
    if (in) text << in.rdbuf();
    out.cpu = cpuinfo_field(text.str(), "model name");
    if (out.cpu.empty()) out.cpu = "unknown CPU";
    std::istringstream all(" " + cpuinfo_field(text.str(), "flags") + " ");
    std::vector<std::string> have;
    for (std::string f; all >> f;) have.push_back(f);
    for (const char* f : {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw",
                          "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                          "amx_bf16", "amx_int8", "asimd", "sve"})
      if (std::find(have.begin(), have.end(), f) != have.end())
        out.flags += (out.flags.empty() ? "" : " ") + std::string(f);
    if (out.flags.empty()) out.flags = "none listed";
    return out;
  }();
  return m;
}

std::filesystem::path cache_file() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && *xdg != '\0') return std::filesystem::path(xdg) / "lathe" / "kernels.json";
  const char* home = std::getenv("HOME");
  if (home != nullptr && *home != '\0')
    return std::filesystem::path(home) / ".cache" / "lathe" / "kernels.json";
  return {};
}

std::vector<Choice> known_choices() {
  State& s = state();
  const std::lock_guard lock(s.mutex);
  read_file_once(s);
  std::map<Key, Choice> all = s.in_file;
  for (const auto& [key, c] : s.process) all[key] = c;
  std::vector<Choice> out;
  for (const auto& [key, c] : all) out.push_back(c);
  return out;
}

std::vector<Choice> process_choices() {
  State& s = state();
  const std::lock_guard lock(s.mutex);
  std::vector<Choice> out;
  for (const auto& [key, c] : s.process) out.push_back(c);
  return out;
}

namespace detail {
void reset() {
  State& s = state();
  const std::lock_guard lock(s.mutex);
  s.env_mode.reset();
  s.file_read = false;
  s.process.clear();
  s.in_file.clear();
  s.write_failed = false;
}
}  // namespace detail

}  // namespace lathe::kernels
