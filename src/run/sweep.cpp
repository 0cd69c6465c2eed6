// lathe sweep: sweep files, grid / random trials, ASHA rung scheduling, the resumable state file,
// and the summary (table, summary.csv, best_config.yaml).
#include "lathe/run/sweep.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <condition_variable>
#include <mutex>
#include <sstream>
#include <thread>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/log.h"
#include "lathe/run/run.h"
#include "lathe/train/trainer.h"

namespace lathe::run {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string where(const std::string& file, const YAML::Node& n) {
  return n.IsDefined() && !n.Mark().is_null() ? fmt::format("{}:{}", file, n.Mark().line + 1) : file;
}

std::string scalar(const YAML::Node& n, const std::string& file, const std::string& key) {
  LATHE_CHECK(n.IsScalar(), ConfigError, "{}: key '{}' expects a single value", where(file, n), key);
  return n.Scalar();
}

/// A choice's value as an override writes it: a scalar as it is, a mapping or list as flow YAML
/// (so `model: {type: choice, values: [{name: mlp, hidden: [32]}, {name: xgboost}]}` picks a
/// whole model section, a family with its own options).
std::string choice_value(const YAML::Node& v) {
  if (v.IsScalar()) return v.Scalar();
  YAML::Emitter out;
  out << YAML::Flow << v;
  return out.c_str();
}

ParamSpec read_param(const std::string& key, const YAML::Node& n, const std::string& file) {
  LATHE_CHECK(n.IsMap(), ConfigError,
              "{}: space.{} must be a mapping like {{type: loguniform, low: 1e-4, high: 1e-1}}",
              where(file, n), key);
  ParamSpec p;
  p.key = key;
  const std::vector<std::string> known = {"type", "values", "low", "high", "step", "grid_points"};
  for (const auto& kv : n) {
    const auto k = kv.first.as<std::string>();
    if (std::find(known.begin(), known.end(), k) == known.end()) {
      const auto hint = config::closest_key(k, known);
      throw ConfigError(fmt::format("{}: unknown key 'space.{}.{}'{}; known: {}", where(file, kv.first),
                                    key, k, hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint),
                                    fmt::join(known, ", ")));
    }
  }
  const std::string w = where(file, n);
  LATHE_CHECK(n["type"], ConfigError, "{}: space.{} needs a type (choice, uniform, loguniform, int)",
              w, key);
  p.type = scalar(n["type"], file, "space." + key + ".type");
  const auto num = [&](const char* k) {
    LATHE_CHECK(n[k], ConfigError, "{}: space.{} of type {} needs '{}'", w, key, p.type, k);
    return config::parse_double(scalar(n[k], file, key), where(file, n[k]), "space." + key + "." + k);
  };
  if (p.type == "choice") {
    LATHE_CHECK(n["values"] && n["values"].IsSequence() && n["values"].size() > 0, ConfigError,
                "{}: space.{} of type choice needs a non-empty list 'values'", w, key);
    for (const auto& v : n["values"]) p.values.push_back(choice_value(v));
  } else if (p.type == "uniform" || p.type == "loguniform" || p.type == "int") {
    p.low = num("low");
    p.high = num("high");
    LATHE_CHECK(p.low <= p.high, ConfigError, "{}: space.{}: low {} is above high {}", w, key, p.low,
                p.high);
    LATHE_CHECK(p.type != "loguniform" || p.low > 0, ConfigError,
                "{}: space.{}: loguniform needs low > 0, got {}", w, key, p.low);
    if (n["step"]) p.step = static_cast<int64_t>(num("step"));
    if (n["grid_points"]) p.grid_points = static_cast<int64_t>(num("grid_points"));
    LATHE_CHECK(p.step > 0, ConfigError, "{}: space.{}: step must be positive", w, key);
  } else {
    throw ConfigError(fmt::format("{}: space.{}: unknown type '{}'; expected choice, uniform, "
                                  "loguniform or int",
                                  w, key, p.type));
  }
  return p;
}

std::string format_value(double v) { return fmt::format("{:.6g}", v); }

/// Every value of one parameter on a grid.
std::vector<std::string> grid_values(const ParamSpec& p, const std::string& file) {
  if (p.type == "choice") return p.values;
  std::vector<std::string> out;
  if (p.type == "int") {
    for (auto v = static_cast<int64_t>(p.low); v <= static_cast<int64_t>(p.high); v += p.step)
      out.push_back(std::to_string(v));
    return out;
  }
  LATHE_CHECK(p.grid_points >= 2, ConfigError,
              "{}: space.{} is continuous ({}): a grid search needs grid_points >= 2 for it", file,
              p.key, p.type);
  for (int64_t i = 0; i < p.grid_points; ++i) {
    const double t = static_cast<double>(i) / static_cast<double>(p.grid_points - 1);
    out.push_back(format_value(p.type == "loguniform"
                                   ? std::exp(std::log(p.low) + t * (std::log(p.high) - std::log(p.low)))
                                   : p.low + t * (p.high - p.low)));
  }
  return out;
}

json to_json(const TrialRecord& t) {
  json rungs = json::object();
  for (const auto& [e, v] : t.rungs) rungs[std::to_string(e)] = v;
  return {{"id", t.id},          {"params", t.params}, {"status", t.status},
          {"rungs", rungs},      {"epochs", t.epochs}, {"error", t.error},
          {"segments", t.segments}};
}

TrialRecord from_json(const json& j) {
  TrialRecord t;
  t.id = j.at("id").get<int64_t>();
  t.params = j.at("params").get<std::vector<std::string>>();
  t.status = j.at("status").get<std::string>();
  for (const auto& [e, v] : j.at("rungs").items()) t.rungs[std::stoll(e)] = v.get<double>();
  t.epochs = j.at("epochs").get<int64_t>();
  t.error = j.value("error", "");
  if (j.contains("segments"))
    t.segments = j.at("segments").get<std::vector<std::pair<double, double>>>();
  return t;
}

/// Stops a fit once `epoch` epochs are done (the checkpointer then saves that point).
class StopAtEpoch : public train::Callback {
 public:
  explicit StopAtEpoch(int64_t epoch) : epoch_(epoch) {}
  std::string name() const override { return "stop_at_epoch"; }
  void on_train_epoch_end(train::Trainer& t, int64_t epoch) override {
    if (epoch >= epoch_) t.request_stop(fmt::format("sweep: rung of {} epochs reached", epoch_));
  }

 private:
  int64_t epoch_;
};

}  // namespace

SweepConfig load_sweep(const fs::path& file, const std::vector<std::string>& overrides) {
  const std::string f = file.string();
  LATHE_CHECK(fs::exists(file), ConfigError, "{}: no such sweep file", f);
  YAML::Node root;
  try {
    root = YAML::LoadFile(f);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}:{}: not valid YAML: {}", f, e.mark.line + 1, e.msg));
  }
  LATHE_CHECK(root.IsMap(), ConfigError, "{}: a sweep file is a mapping (base, space, ...)", f);
  SweepConfig cfg;
  cfg.source = f;
  const std::vector<std::string> known = {"base",   "overrides", "name",  "dir",
                                          "metric", "mode",      "search", "trials",
                                          "seed",   "scheduler", "asha",  "space", "devices"};
  for (const auto& kv : root) {
    const auto k = kv.first.as<std::string>();
    if (std::find(known.begin(), known.end(), k) != known.end()) continue;
    const auto hint = config::closest_key(k, known);
    throw ConfigError(fmt::format("{}: unknown key '{}'{}; known keys: {}", where(f, kv.first), k,
                                  hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint),
                                  fmt::join(known, ", ")));
  }
  LATHE_CHECK(root["base"], ConfigError, "{}: missing required key 'base' (the run config)", f);
  cfg.base = scalar(root["base"], f, "base");
  if (cfg.base.is_relative()) cfg.base = file.parent_path() / cfg.base;
  if (root["overrides"])
    for (const auto& o : root["overrides"]) cfg.overrides.push_back(scalar(o, f, "overrides"));
  cfg.overrides.insert(cfg.overrides.end(), overrides.begin(), overrides.end());
  const auto str = [&](const char* k, std::string& out) {
    if (root[k]) out = scalar(root[k], f, k);
  };
  str("name", cfg.name);
  str("dir", cfg.dir);
  str("metric", cfg.metric);
  str("mode", cfg.mode);
  str("search", cfg.search);
  str("scheduler", cfg.scheduler);
  if (root["devices"]) {
    const auto d = root["devices"];
    LATHE_CHECK(d.IsSequence(), ConfigError, "{}: devices must be a list like [cuda:0, cuda:1]",
                where(f, d));
    for (const auto& dev : d) cfg.devices.push_back(scalar(dev, f, "devices"));
  }
  if (root["trials"]) cfg.trials = config::parse_int(scalar(root["trials"], f, "trials"), where(f, root["trials"]), "trials");
  if (root["seed"])
    cfg.seed = static_cast<uint64_t>(config::parse_int(scalar(root["seed"], f, "seed"), where(f, root["seed"]), "seed"));
  if (const auto a = root["asha"]) {
    LATHE_CHECK(a.IsMap(), ConfigError, "{}: asha must be {{min_epochs: N, reduction_factor: N}}", where(f, a));
    for (const auto& kv : a) {
      const auto k = kv.first.as<std::string>();
      const auto v = config::parse_int(scalar(kv.second, f, "asha." + k), where(f, kv.second), "asha." + k);
      if (k == "min_epochs") cfg.min_epochs = v;
      else if (k == "reduction_factor") cfg.reduction_factor = v;
      else throw ConfigError(fmt::format("{}: unknown key 'asha.{}'; known: min_epochs, reduction_factor", where(f, kv.first), k));
    }
  }
  LATHE_CHECK(root["space"] && root["space"].IsMap() && root["space"].size() > 0, ConfigError,
              "{}: missing 'space': a mapping of config keys to search, e.g. optim.lr: {{type: "
              "loguniform, low: 1e-4, high: 1e-1}}",
              f);
  for (const auto& kv : root["space"]) cfg.space.push_back(read_param(kv.first.as<std::string>(), kv.second, f));

  LATHE_CHECK(cfg.mode == "min" || cfg.mode == "max", ConfigError, "{}: mode '{}' must be min or max", f, cfg.mode);
  LATHE_CHECK(cfg.search == "grid" || cfg.search == "random", ConfigError,
              "{}: search '{}' must be grid or random", f, cfg.search);
  LATHE_CHECK(cfg.scheduler == "asha" || cfg.scheduler == "none", ConfigError,
              "{}: scheduler '{}' must be asha or none", f, cfg.scheduler);
  LATHE_CHECK(cfg.trials > 0 && cfg.min_epochs > 0 && cfg.reduction_factor >= 2, ConfigError,
              "{}: trials and asha.min_epochs must be positive and asha.reduction_factor >= 2", f);
  // The base config must load with the sweep's overrides and every searched key.
  std::vector<std::string> probe = cfg.overrides;
  for (const auto& p : cfg.space)
    probe.push_back(p.key + "=" + (p.type == "choice" ? p.values.front() : format_value(p.low)));
  config::load_config(cfg.base, probe);
  return cfg;
}

std::vector<std::vector<std::string>> sample_trials(const SweepConfig& cfg) {
  std::vector<std::vector<std::string>> trials;
  if (cfg.search == "grid") {
    trials.push_back({});
    for (const auto& p : cfg.space) {
      std::vector<std::vector<std::string>> next;
      for (const auto& t : trials)
        for (const auto& v : grid_values(p, cfg.source)) {
          auto u = t;
          u.push_back(p.key + "=" + v);
          next.push_back(std::move(u));
        }
      trials = std::move(next);
    }
    return trials;
  }
  std::mt19937_64 rng(cfg.seed);
  for (int64_t i = 0; i < cfg.trials; ++i) {
    std::vector<std::string> t;
    for (const auto& p : cfg.space) {
      std::uniform_real_distribution<double> u01(0.0, 1.0);
      std::string v;
      if (p.type == "choice") {
        v = p.values[static_cast<size_t>(rng() % p.values.size())];
      } else if (p.type == "int") {
        const auto n = static_cast<uint64_t>((static_cast<int64_t>(p.high) - static_cast<int64_t>(p.low)) / p.step + 1);
        v = std::to_string(static_cast<int64_t>(p.low) + static_cast<int64_t>(rng() % n) * p.step);
      } else if (p.type == "loguniform") {
        v = format_value(std::exp(std::log(p.low) + u01(rng) * (std::log(p.high) - std::log(p.low))));
      } else {
        v = format_value(p.low + u01(rng) * (p.high - p.low));
      }
      t.push_back(p.key + "=" + v);
    }
    trials.push_back(std::move(t));
  }
  return trials;
}

std::vector<int64_t> asha_rungs(int64_t min_epochs, int64_t eta, int64_t max_epochs) {
  std::vector<int64_t> rungs;
  for (int64_t r = min_epochs; r < max_epochs; r *= eta) rungs.push_back(r);
  rungs.push_back(max_epochs);
  return rungs;
}

SweepResult run_sweep(const SweepConfig& cfg, bool resume) {
  SweepResult result;
  result.folder = fs::path(cfg.dir) / cfg.name;
  const fs::path state_file = result.folder / "sweep_state.json";
  fs::create_directories(result.folder);
  const bool maximize = cfg.mode == "max";
  const auto better = [&](double a, double b) { return maximize ? a > b : a < b; };

  auto& trials = result.trials;
  if (resume && fs::exists(state_file)) {
    std::ifstream in(state_file);
    const json state = json::parse(in);
    for (const auto& t : state.at("trials")) trials.push_back(from_json(t));
    log::info("sweep {}: resuming ({} trials in the state file)", cfg.name, trials.size());
  } else {
    LATHE_CHECK(!fs::exists(state_file), ConfigError,
                "{}: a sweep already ran here; pass --resume to continue it, or choose another "
                "name",
                state_file.string());
    const auto sampled = sample_trials(cfg);
    for (size_t i = 0; i < sampled.size(); ++i)
      trials.push_back(TrialRecord{static_cast<int64_t>(i), sampled[i], "pending", {}, 0, ""});
  }
  const auto save_state = [&] {
    json j;
    j["sweep"] = cfg.source;
    j["trials"] = json::array();
    for (const auto& t : trials) j["trials"].push_back(to_json(t));
    write_file_atomic(state_file, j.dump(2) + "\n");
  };
  save_state();

  const int64_t max_epochs = config::load_config(cfg.base, cfg.overrides).trainer.max_epochs;
  const std::vector<int64_t> rungs = cfg.scheduler == "asha"
                                         ? asha_rungs(cfg.min_epochs, cfg.reduction_factor, max_epochs)
                                         : std::vector<int64_t>{max_epochs};

  // Trials run on `slots` devices at once: one at a time by default, or one per entry of
  // cfg.devices (e.g. cuda:0, cuda:1). `m` guards `trials` and the state file.
  const std::vector<std::string> slots =
      cfg.devices.empty() ? std::vector<std::string>{""} : cfg.devices;
  std::mutex m;
  std::condition_variable done;
  std::exception_ptr fatal;

  // Trains trial t on `device` up to `target` epochs (resuming its own checkpoint) and records
  // the metric. Called with `m` unlocked; locks it to update the record.
  const auto run_segment = [&](TrialRecord& t, int64_t target, const std::string& device) {
    const std::string run_name = fmt::format("trial-{:03d}", t.id);
    const fs::path run_dir = result.folder / run_name;
    std::vector<std::string> o = cfg.overrides;
    std::vector<std::string> params;
    {
      std::lock_guard<std::mutex> lock(m);
      params = t.params;
      t.status = "running";
      save_state();
    }
    o.insert(o.end(), params.begin(), params.end());
    o.push_back("run.dir=" + result.folder.string());
    o.push_back("run.name=" + run_name);
    if (!device.empty()) o.push_back("run.device=" + device);
    log::info("sweep {}: trial {} → {} epochs{} ({})", cfg.name, t.id, target,
              device.empty() ? "" : " on " + device, fmt::join(params, " "));
    std::string status, error;
    double value = NAN;
    const auto now = [] {
      return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
          .count();
    };
    const double started = now();
    try {
      const bool has_ckpt = fs::exists(run_dir / "checkpoints" / "last" / "state.json");
      const auto run = train_from_config(config::load_config(cfg.base, o),
                                                has_ckpt ? "auto" : "",
                                                {std::make_shared<StopAtEpoch>(target)});
      for (const auto& rec : run.history) {
        const auto it = rec.val.find(cfg.metric);
        LATHE_CHECK(it != rec.val.end(), ConfigError,
                    "{}: metric '{}' is not a validation metric of this run (e.g. val/loss, "
                    "val/accuracy)",
                    cfg.source, cfg.metric);
        value = it->second;
      }
      status = target >= rungs.back() ? "completed" : "paused";
    } catch (const ConfigError&) {
      std::lock_guard<std::mutex> lock(m);
      fatal = std::current_exception();  // a mistake in the sweep itself: stop the sweep
      t.status = "failed";
      return;
    } catch (const Error& e) {
      status = "failed";
      error = e.what();
      log::warn("sweep {}: trial {} failed: {}", cfg.name, t.id, e.what());
    }
    std::lock_guard<std::mutex> lock(m);
    t.segments.emplace_back(started, now());
    t.status = status;
    t.error = error;
    if (status != "failed") {
      t.epochs = target;
      t.rungs[target] = value;
    }
    save_state();
  };

  // The next job (ASHA's rule, with m held): promote the best paused trial of the highest rung
  // where it is in the top 1/eta of that rung's results; otherwise start the next pending trial.
  // A trial killed mid-segment (status running on resume) continues first.
  std::vector<TrialRecord*> interrupted;
  for (auto& t : trials)
    if (t.status == "running") interrupted.push_back(&t);
  const auto next_job = [&]() -> std::pair<TrialRecord*, int64_t> {
    if (!interrupted.empty()) {
      TrialRecord* t = interrupted.back();
      interrupted.pop_back();
      const auto next = std::upper_bound(rungs.begin(), rungs.end(), t->epochs);
      return {t, next == rungs.end() ? rungs.back() : *next};
    }
    for (size_t k = rungs.size() - 1; k-- > 0;) {
      std::vector<TrialRecord*> at_rung;
      for (auto& t : trials)
        if (t.rungs.count(rungs[k])) at_rung.push_back(&t);
      std::sort(at_rung.begin(), at_rung.end(), [&](auto* a, auto* b) {
        return better(a->rungs.at(rungs[k]), b->rungs.at(rungs[k]));
      });
      const size_t top = at_rung.size() / static_cast<size_t>(cfg.reduction_factor);
      for (size_t i = 0; i < top; ++i)
        if (at_rung[i]->status == "paused" && at_rung[i]->epochs == rungs[k])
          return {at_rung[i], rungs[k + 1]};
    }
    for (auto& t : trials)
      if (t.status == "pending") return {&t, rungs.front()};
    return {nullptr, 0};
  };

  {
    std::vector<std::thread> workers;
    std::vector<bool> busy(slots.size(), false);
    std::unique_lock<std::mutex> lock(m);
    while (!fatal) {
      const auto free_slot = std::find(busy.begin(), busy.end(), false);
      auto [job, target] = free_slot == busy.end() ? std::pair<TrialRecord*, int64_t>{nullptr, 0}
                                                   : next_job();
      if (job != nullptr) {
        const auto slot = static_cast<size_t>(free_slot - busy.begin());
        busy[slot] = true;
        job->status = "running";  // so next_job does not pick it again
        if (slots.size() == 1) {  // one at a time: run here, in order
          lock.unlock();
          run_segment(*job, target, slots[slot]);
          lock.lock();
          busy[slot] = false;
          continue;
        }
        workers.emplace_back([&, job, target, slot] {
          run_segment(*job, target, slots[slot]);
          std::lock_guard<std::mutex> g(m);
          busy[slot] = false;
          done.notify_all();
        });
        continue;
      }
      if (std::none_of(busy.begin(), busy.end(), [](bool b) { return b; })) break;
      done.wait(lock);  // a trial finished: its result may allow a promotion
    }
    lock.unlock();
    for (auto& w : workers) w.join();
  }
  if (fatal) std::rethrow_exception(fatal);
  for (auto& t : trials)
    if (t.status == "paused") t.status = "stopped";  // never promoted: stopped early
  save_state();

  // Best: the best metric at the highest rung any trial reached.
  for (size_t i = 0; i < trials.size(); ++i) {
    result.total_epochs += trials[i].epochs;
    if (trials[i].rungs.empty()) continue;
    if (result.best < 0) {
      result.best = static_cast<int64_t>(i);
      continue;
    }
    const auto& b = trials[static_cast<size_t>(result.best)];
    const auto& [e, v] = *trials[i].rungs.rbegin();
    const auto& [be, bv] = *b.rungs.rbegin();
    if (e > be || (e == be && better(v, bv))) result.best = static_cast<int64_t>(i);
  }

  std::string csv = "trial,status,epochs,metric," + cfg.metric + "_rungs,params\n";
  log::info("sweep {}: {} trials, {} epochs in all", cfg.name, trials.size(), result.total_epochs);
  log::info("{:>5}  {:<9}  {:>6}  {:>10}  {}", "trial", "status", "epochs", cfg.metric, "params");
  for (const auto& t : trials) {
    const double v = t.rungs.empty() ? NAN : t.rungs.rbegin()->second;
    std::string rung_text;
    for (const auto& [e, m] : t.rungs) rung_text += fmt::format("{}{}:{:.6g}", rung_text.empty() ? "" : " ", e, m);
    csv += fmt::format("{},{},{},{},{},\"{}\"\n", t.id, t.status, t.epochs,
                       std::isnan(v) ? "" : fmt::format("{:.6g}", v), rung_text, fmt::join(t.params, " "));
    log::info("{:>5}  {:<9}  {:>6}  {:>10.4f}  {}{}", t.id, t.status, t.epochs, v,
              fmt::join(t.params, " "), result.best == t.id ? "  <- best" : "");
  }
  write_file_atomic(result.folder / "summary.csv", csv);
  if (result.best >= 0) {
    auto o = cfg.overrides;
    const auto& best = trials[static_cast<size_t>(result.best)];
    o.insert(o.end(), best.params.begin(), best.params.end());
    write_file_atomic(result.folder / "best_config.yaml", config::to_yaml(config::load_config(cfg.base, o)));
  }
  log::info("wrote {}/{{sweep_state.json, summary.csv, best_config.yaml}}", result.folder.string());
  return result;
}

}  // namespace lathe::run
