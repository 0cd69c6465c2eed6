// lathe runs: reading run folders into RunSummary rows, filtering, sorting, the table, JSON, the
// difference of two runs; run.json (starts and ends) and metrics.jsonl readers.
#include "lathe/run/runs.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <fstream>
#include <set>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/train/task.h"
#include "src/run/run_files.h"

namespace lathe::run {
namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace {

/// The test metrics shown in the table, in this order, when the run has them.
constexpr const char* kHeadline[] = {"accuracy", "f1_macro", "roc_auc", "perplexity", "r2", "rmse"};

void flatten_node(const YAML::Node& n, const std::string& prefix,
                  std::map<std::string, std::string>& out) {
  if (n.IsMap()) {
    if (n.size() == 0 && !prefix.empty()) out[prefix] = "{}";
    for (const auto& kv : n)
      flatten_node(kv.second, prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar(),
                   out);
  } else if (n.IsSequence()) {
    YAML::Emitter e;
    e << YAML::Flow << n;
    out[prefix] = e.c_str();
  } else if (n.IsScalar()) {
    out[prefix] = n.Scalar();
  } else {
    out[prefix] = "";
  }
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double mtime_unix(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return static_cast<double>(st.st_mtim.tv_sec) + 1e-9 * static_cast<double>(st.st_mtim.tv_nsec);
}

std::string host_name() {
  char buf[256] = {};
  return ::gethostname(buf, sizeof buf - 1) == 0 ? std::string(buf) : std::string();
}

std::string format_time(double unix_seconds) {
  if (unix_seconds <= 0) return "-";
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

std::string format_duration(double s) {
  if (s < 9.95) return fmt::format("{:.1f}s", s);
  const auto total = static_cast<int64_t>(std::llround(s));
  if (total < 60) return fmt::format("{}s", total);
  if (total < 3600) return fmt::format("{}m{:02}s", total / 60, total % 60);
  return fmt::format("{}h{:02}m", total / 3600, (total / 60) % 60);
}

std::string number(double v) { return fmt::format("{}", v); }  // shortest round trip

std::optional<double> as_number(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end == nullptr || *end != '\0' || !std::isfinite(v)) return std::nullopt;
  return v;
}

json read_json(const fs::path& file) {
  const auto j = json::parse(detail::read_text(file), nullptr, /*allow_exceptions=*/false);
  LATHE_CHECK(!j.is_discarded(), DataError, "{}: not valid JSON", file.string());
  return j;
}

fs::path record_file(const fs::path& run_dir) { return run_dir / "run.json"; }

ordered_json read_record(const fs::path& run_dir) {
  const fs::path file = record_file(run_dir);
  if (!fs::exists(file)) return ordered_json::object();
  auto j = ordered_json::parse(detail::read_text(file), nullptr, false);
  return j.is_object() ? j : ordered_json::object();
}

/// Fills a summary from the folder's files; throws (any lathe::Error) when one is malformed.
void read_run(RunSummary& s) {
  const fs::path config_file = s.dir / "config.yaml";
  LATHE_CHECK(fs::exists(config_file), DataError,
              "no config.yaml (not a run folder, or one whose run never started)");
  const std::string yaml = detail::read_text(config_file);
  s.config = flatten_yaml(yaml, config_file.string());
  const config::RunConfig cfg = config::parse_config(yaml, config_file.string());
  s.model = cfg.model.name;
  s.data = cfg.data.source + ":" + fs::path(cfg.data.path).filename().string();
  s.task = cfg.task.kind;
  s.max_epochs = cfg.trainer.max_epochs;
  s.max_steps = cfg.trainer.max_steps;
  if (cfg.task.kind != "auto") {
    const train::Task task(cfg.task);
    s.monitor = cfg.checkpoint.monitor.empty() ? task.default_monitor() : cfg.checkpoint.monitor;
    s.higher_is_better =
        cfg.checkpoint.mode.empty() ? task.higher_is_better(s.monitor) : cfg.checkpoint.mode == "max";
  }

  double time_s = 0;  // the epochs' own times: the wall time of a run without run.json
  double last_write = mtime_unix(config_file);
  if (fs::exists(s.dir / "metrics.jsonl")) {
    last_write = mtime_unix(s.dir / "metrics.jsonl");
    for (const auto& e : read_metrics_log(s.dir / "metrics.jsonl")) {
      s.steps = std::max(s.steps, e.step);
      if (e.kind == "epoch") {
        s.epochs = std::max(s.epochs, e.epoch);
        if (const auto t = e.values.find("time_s"); t != e.values.end()) time_s += t->second;
      }
      if (const auto v = e.values.find(s.monitor); v != e.values.end() && std::isfinite(v->second))
        if (!s.best || (s.higher_is_better ? v->second > *s.best : v->second < *s.best))
          s.best = v->second;
    }
  }
  const bool tested = fs::exists(s.dir / "test_metrics.json");
  if (tested) {
    const json j = read_json(s.dir / "test_metrics.json");
    LATHE_CHECK(j.is_object(), DataError, "test_metrics.json is not a JSON object");
    for (const auto& [k, v] : j.items())
      if (v.is_number()) s.test[k] = v.get<double>();
  }
  const fs::path last = s.dir / "checkpoints" / "last" / "state.json";
  if (fs::exists(last)) {
    const json st = read_json(last);
    if (st.is_object() && st.contains("step") && st["step"].is_number_integer()) {
      s.resumable = true;
      s.resume_step = st["step"].get<int64_t>();
    }
  }

  const bool planned_end_reached =
      s.epochs >= s.max_epochs || (s.max_steps > 0 && s.steps >= s.max_steps);
  const ordered_json record = read_record(s.dir);
  const auto segments = record.value("segments", ordered_json::array());
  if (segments.is_array() && !segments.empty()) {
    s.started_unix = segments.front().value("started_unix", 0.0);
    double wall = 0;
    for (const auto& seg : segments) wall += seg.value("seconds", 0.0);
    const auto& tail = segments.back();
    if (tail.contains("failed")) {
      s.status = "failed";
      const std::string why = tail.value("failed", "");
      s.detail = why.substr(0, std::min<size_t>(why.find('\n'), 200));
    } else if (tail.contains("ended_unix")) {
      const std::string stopped = tail.value("stopped_early", "");
      s.status = stopped.empty() ? "finished" : "stopped early";
      s.detail = stopped;
    } else {
      wall += std::max(0.0, last_write - tail.value("started_unix", last_write));
      const auto pid = tail.value("pid", int64_t{0});
      const bool alive = pid > 0 && tail.value("host", "") == host_name() &&
                         ::kill(static_cast<pid_t>(pid), 0) == 0;
      s.status = alive ? "running" : "killed";
      if (alive) s.detail = fmt::format("pid {}", pid);
    }
    s.wall_s = wall;
  } else {  // a run from before run.json: what its files say
    s.started_unix = mtime_unix(config_file);
    s.status = !tested ? "killed" : planned_end_reached ? "finished" : "stopped early";
    if (time_s > 0) s.wall_s = time_s;
  }
  if (s.status == "killed")
    s.detail = s.resumable ? fmt::format("resumable from step {}", s.resume_step)
                           : std::string("not resumable: no checkpoint");
}

}  // namespace

std::map<std::string, std::string> flatten_yaml(const std::string& yaml, const std::string& origin) {
  std::map<std::string, std::string> out;
  try {
    flatten_node(YAML::Load(yaml), "", out);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}:{}: malformed YAML: {}", origin, e.mark.line + 1, e.msg));
  }
  return out;
}

std::vector<train::LogEvent> read_metrics_log(const fs::path& file) {
  std::ifstream in(file);
  LATHE_CHECK(in.good(), IoError, "{}: cannot open for reading", file.string());
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
  std::vector<train::LogEvent> rows;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto j = json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() && i + 1 == lines.size()) break;  // the last line, cut short by a crash
    const auto field_ok = [&](const char* k, bool integer) {
      return j.is_object() && j.contains(k) &&
             (integer ? j[k].is_number_integer() : j[k].is_string());
    };
    LATHE_CHECK(field_ok("kind", false) && field_ok("epoch", true) && field_ok("step", true),
                CheckpointError,
                "{}:{}: not a metrics row (a JSON object with 'kind', integer 'epoch' and "
                "'step'); the run folder is damaged: move the file away to resume without the "
                "earlier rows",
                file.string(), i + 1);
    train::LogEvent e{j["kind"].get<std::string>(), j["epoch"].get<int64_t>(),
                      j["step"].get<int64_t>(), {}};
    for (const auto& [k, v] : j.items())
      if (v.is_number() && k != "epoch" && k != "step") e.values[k] = v.get<double>();
    rows.push_back(std::move(e));
  }
  return rows;
}

RunSummary summarize_run(const fs::path& dir, const std::string& name) {
  RunSummary s;
  s.dir = dir;
  s.name = name.empty() ? dir.filename().string() : name;
  try {
    read_run(s);
  } catch (const std::exception& e) {  // lathe errors, and anything a damaged file provokes
    s.status = "unreadable";
    std::string why = e.what();
    // The folder is named by the row; only the file inside it is worth repeating.
    const std::string prefix = dir.string() + "/";
    for (size_t at; (at = why.find(prefix)) != std::string::npos;) why.erase(at, prefix.size());
    s.detail = why.substr(0, why.find('\n'));
  }
  return s;
}

std::vector<RunSummary> list_runs(const fs::path& root) {
  LATHE_CHECK(fs::is_directory(root), ConfigError,
              "{}: no such folder; pass the folder that holds the run folders (run.dir, default "
              "runs/)",
              root.string());
  const auto is_run = [](const fs::path& p) {
    return fs::exists(p / "config.yaml") || fs::exists(p / "metrics.jsonl") ||
           fs::exists(p / "run.json");
  };
  const auto subfolders = [](const fs::path& p) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(p))
      if (e.is_directory() && e.path().filename().string().front() != '.') out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
  };
  std::vector<RunSummary> runs;
  for (const auto& dir : subfolders(root)) {
    if (is_run(dir)) {
      runs.push_back(summarize_run(dir));
      continue;
    }
    bool group = false;  // a sweep: runs one level below
    for (const auto& sub : subfolders(dir))
      if (is_run(sub)) {
        runs.push_back(summarize_run(sub, dir.filename().string() + "/" + sub.filename().string()));
        group = true;
      }
    if (!group) runs.push_back(summarize_run(dir));  // listed, as unreadable
  }
  std::stable_sort(runs.begin(), runs.end(), [](const RunSummary& a, const RunSummary& b) {
    return a.started_unix < b.started_unix;
  });
  return runs;
}

std::optional<std::string> RunSummary::field(const std::string& key) const {
  if (key == "name") return name;
  if (key == "status") return status;
  if (key == "resumable") return resumable ? "yes" : "no";
  if (key == "started") return started_unix > 0 ? std::optional(number(started_unix)) : std::nullopt;
  if (key == "wall") return wall_s ? std::optional(number(*wall_s)) : std::nullopt;
  if (status == "unreadable") return std::nullopt;
  if (key == "model") return model;
  if (key == "data") return data;
  if (key == "task") return task;
  if (key == "monitor") return monitor;
  if (key == "epochs") return std::to_string(epochs);
  if (key == "steps") return std::to_string(steps);
  if (key == "best") return best ? std::optional(number(*best)) : std::nullopt;
  for (const char* prefix : {"test.", "test/"})
    if (key.rfind(prefix, 0) == 0) {
      const auto it = test.find(key.substr(5));
      return it == test.end() ? std::nullopt : std::optional(number(it->second));
    }
  const auto it = config.find(key);
  return it == config.end() ? std::nullopt : std::optional(it->second);
}

std::string RunSummary::status_text() const {
  if (status == "unreadable") return "unreadable: " + detail;
  return detail.empty() ? status : fmt::format("{} ({})", status, detail);
}

namespace {

/// The keys a listing can sort or filter by, for error messages.
std::string known_keys(const std::vector<RunSummary>& runs) {
  std::set<std::string> config_keys;
  for (const auto& r : runs)
    for (const auto& [k, v] : r.config) config_keys.insert(k);
  return fmt::format(
      "name, model, data, task, status, resumable, epochs, steps, monitor, best, wall, started, "
      "test.<metric>, or a config key ({}{})",
      fmt::join(std::vector<std::string>(config_keys.begin(),
                                         std::next(config_keys.begin(),
                                                   std::min<ptrdiff_t>(6, config_keys.size()))),
                ", "),
      config_keys.size() > 6 ? ", ..." : "");
}

bool key_known(const std::vector<RunSummary>& runs, const std::string& key) {
  static const std::set<std::string> fixed = {"name",    "model", "data", "task",
                                              "status",  "resumable", "epochs", "steps",
                                              "monitor", "best",  "wall", "started"};
  if (fixed.count(key) || key.rfind("test.", 0) == 0 || key.rfind("test/", 0) == 0) return true;
  return std::any_of(runs.begin(), runs.end(),
                     [&](const RunSummary& r) { return r.config.count(key) > 0; });
}

}  // namespace

void filter_runs(std::vector<RunSummary>& runs, const std::vector<std::string>& filters) {
  for (const auto& f : filters) {
    const auto eq = f.find('=');
    LATHE_CHECK(eq != std::string::npos && eq > 0, ConfigError,
                "--filter '{}': expected key=value, e.g. --filter model.name=convnet", f);
    const std::string key = f.substr(0, eq), value = f.substr(eq + 1);
    LATHE_CHECK(key_known(runs, key), ConfigError,
                "--filter '{}': no run has the key '{}'; keys are {}", f, key, known_keys(runs));
    const auto wanted = as_number(value);
    std::erase_if(runs, [&](const RunSummary& r) {
      const auto v = r.field(key);
      if (!v) return true;
      const auto n = as_number(*v);
      return wanted && n ? *wanted != *n : *v != value;
    });
  }
}

void sort_runs(std::vector<RunSummary>& runs, const std::string& key, bool reverse) {
  LATHE_CHECK(key_known(runs, key), ConfigError, "--sort '{}': not a key; keys are {}", key,
              known_keys(runs));
  const bool metric = key == "best" || key.rfind("test.", 0) == 0 || key.rfind("test/", 0) == 0;
  const auto higher = [&](const RunSummary& r) {
    if (key == "best") return r.higher_is_better;
    try {
      config::TaskSection section;
      section.kind = r.task;
      const train::Task probe(section);
      return probe.higher_is_better(key.substr(5));
    } catch (const ConfigError&) {
      return false;  // a user metric: no known direction, ascending
    }
  };
  // a before b, both having the key: numbers by value (metrics best first), text alphabetically
  const auto before = [&](const RunSummary& a, const std::string& va, const std::string& vb) {
    const auto na = as_number(va), nb = as_number(vb);
    if (!na || !nb) return va < vb;
    return metric && higher(a) ? *na > *nb : *na < *nb;
  };
  std::stable_sort(runs.begin(), runs.end(), [&](const RunSummary& a, const RunSummary& b) {
    const auto va = a.field(key), vb = b.field(key);
    if (!va || !vb) return va.has_value() && !vb.has_value();  // missing values last
    return reverse ? before(b, *vb, *va) : before(a, *va, *vb);
  });
}

std::string format_runs_table(const std::vector<RunSummary>& runs) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "STARTED", "MODEL", "DATA", "EPOCHS", "STEPS", "WALL", "BEST", "TEST", "STATUS"}};
  for (const auto& r : runs) {
    if (r.status == "unreadable") {
      rows.push_back({r.name, format_time(r.started_unix), "-", "-", "-", "-", "-", "-", "-",
                      r.status_text()});
      continue;
    }
    std::vector<std::string> test;
    for (const char* k : kHeadline)
      if (r.test.count(k)) test.push_back(fmt::format("{} {:.4f}", k, r.test.at(k)));
    if (test.empty() && r.test.count("loss"))
      test.push_back(fmt::format("loss {:.4f}", r.test.at("loss")));
    rows.push_back({r.name, format_time(r.started_unix), r.model, r.data,
                    fmt::format("{}/{}", r.epochs, r.max_epochs),
                    r.max_steps > 0 ? fmt::format("{}/{}", r.steps, r.max_steps)
                                    : std::to_string(r.steps),
                    r.wall_s ? format_duration(*r.wall_s) : "-",
                    r.best ? fmt::format("{} {:.4f}", r.monitor, *r.best) : "-",
                    test.empty() ? "-" : fmt::format("{}", fmt::join(test, " ")),
                    r.status_text()});
  }
  std::vector<size_t> width(rows.front().size(), 0);
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c)
      line += c + 1 == row.size() ? row[c] : fmt::format("{:<{}}  ", row[c], width[c]);
    out += line + "\n";
  }
  return out;
}

namespace {

ordered_json summary_json(const RunSummary& r) {
  ordered_json j;
  j["name"] = r.name;
  j["dir"] = r.dir.string();
  j["status"] = r.status;
  j["detail"] = r.detail;
  j["resumable"] = r.resumable;
  j["resume_step"] = r.resumable ? ordered_json(r.resume_step) : ordered_json(nullptr);
  j["model"] = r.model;
  j["data"] = r.data;
  j["task"] = r.task;
  j["epochs"] = r.epochs;
  j["max_epochs"] = r.max_epochs;
  j["steps"] = r.steps;
  j["max_steps"] = r.max_steps;
  j["monitor"] = r.monitor;
  j["best"] = r.best ? ordered_json(*r.best) : ordered_json(nullptr);
  j["test"] = ordered_json::object();
  for (const auto& [k, v] : r.test) j["test"][k] = std::isfinite(v) ? ordered_json(v) : nullptr;
  j["wall_s"] = r.wall_s ? ordered_json(*r.wall_s) : ordered_json(nullptr);
  j["started"] = r.started_unix > 0 ? ordered_json(format_time(r.started_unix)) : nullptr;
  j["started_unix"] = r.started_unix;
  j["config"] = r.config;
  return j;
}

}  // namespace

std::string runs_json(const std::vector<RunSummary>& runs) {
  ordered_json j = ordered_json::array();
  for (const auto& r : runs) j.push_back(summary_json(r));
  return j.dump(2) + "\n";
}

RunDiff diff_runs(const RunSummary& a, const RunSummary& b) {
  RunDiff d;
  std::set<std::string> keys;
  for (const auto& [k, v] : a.config) keys.insert(k);
  for (const auto& [k, v] : b.config) keys.insert(k);
  for (const auto& k : keys) {
    if (k == "run.name") continue;  // always differs: the folders' own names
    const auto va = a.config.count(k) ? a.config.at(k) : "";
    const auto vb = b.config.count(k) ? b.config.at(k) : "";
    if (va != vb) d.config.push_back({k, va, vb});
  }
  const auto add = [&](const std::string& key) {
    const auto na = a.field(key), nb = b.field(key);
    if (!na && !nb) return;
    d.metrics.push_back({key, na ? as_number(*na) : std::nullopt, nb ? as_number(*nb) : std::nullopt});
  };
  add("best");
  std::set<std::string> test;
  for (const auto& [k, v] : a.test) test.insert(k);
  for (const auto& [k, v] : b.test) test.insert(k);
  for (const auto& k : test) add("test." + k);
  add("epochs");
  add("steps");
  add("wall");
  return d;
}

std::string format_diff(const RunSummary& a, const RunSummary& b, const RunDiff& d) {
  const auto show = [](const std::optional<double>& v) {
    return v ? fmt::format("{:.6g}", *v) : std::string("-");
  };
  std::string out = fmt::format("a: {} ({})\nb: {} ({})\n", a.dir.string(), a.status_text(),
                                b.dir.string(), b.status_text());
  size_t w = 6;
  for (const auto& v : d.config) w = std::max(w, v.key.size());
  for (const auto& m : d.metrics) w = std::max(w, m.key.size());
  out += d.config.empty() ? "\nconfig: identical\n" : "\nconfig\n";
  for (const auto& v : d.config)
    out += fmt::format("  {:<{}}  {} -> {}\n", v.key, w, v.a.empty() ? "(absent)" : v.a,
                       v.b.empty() ? "(absent)" : v.b);
  out += "\nmetrics" + (a.monitor.empty() ? std::string() : " (best: " + a.monitor + ")") + "\n";
  for (const auto& m : d.metrics)
    out += fmt::format("  {:<{}}  {} -> {}{}\n", m.key, w, show(m.a), show(m.b),
                       m.a && m.b ? fmt::format("  ({:+.6g})", *m.b - *m.a) : "");
  return out;
}

std::string diff_json(const RunSummary& a, const RunSummary& b, const RunDiff& d) {
  ordered_json j;
  j["a"] = a.dir.string();
  j["b"] = b.dir.string();
  j["config"] = ordered_json::array();
  for (const auto& v : d.config) j["config"].push_back({{"key", v.key}, {"a", v.a}, {"b", v.b}});
  j["metrics"] = ordered_json::array();
  const auto val = [](const std::optional<double>& v) { return v ? ordered_json(*v) : ordered_json(nullptr); };
  for (const auto& m : d.metrics)
    j["metrics"].push_back({{"key", m.key},
                            {"a", val(m.a)},
                            {"b", val(m.b)},
                            {"delta", m.a && m.b ? ordered_json(*m.b - *m.a) : ordered_json(nullptr)}});
  return j.dump(2) + "\n";
}

void record_run_start(const fs::path& run_dir, const std::string& resumed_from) {
  ordered_json record = resumed_from.empty() ? ordered_json::object() : read_record(run_dir);
  if (!record.contains("segments") || !record["segments"].is_array())
    record["segments"] = ordered_json::array();
  const double now = unix_now();
  ordered_json seg;
  seg["started"] = format_time(now);
  seg["started_unix"] = now;
  seg["host"] = host_name();
  seg["pid"] = static_cast<int64_t>(::getpid());
  if (!resumed_from.empty()) seg["resumed_from"] = resumed_from;
  record["segments"].push_back(seg);
  write_file_atomic(record_file(run_dir), record.dump(2) + "\n");
}

namespace {

/// Closes the last start of run.json: end time, wall seconds (since that start when not
/// given) and, when `value` is not empty, `key` = `value`.
void close_segment(const fs::path& run_dir, std::optional<double> seconds, const char* key,
                   const std::string& value) {
  ordered_json record = read_record(run_dir);
  if (!record.contains("segments") || !record["segments"].is_array() || record["segments"].empty())
    return;
  auto& seg = record["segments"].back();
  const double now = unix_now();
  seg["ended"] = format_time(now);
  seg["ended_unix"] = now;
  seg["seconds"] = seconds ? *seconds : now - seg.value("started_unix", now);
  if (!value.empty()) seg[key] = value;
  write_file_atomic(record_file(run_dir), record.dump(2) + "\n");
}

}  // namespace

void record_run_end(const fs::path& run_dir, double seconds, const std::string& stopped_early) {
  close_segment(run_dir, seconds, "stopped_early", stopped_early);
}

void record_run_failed(const fs::path& run_dir, const std::string& error) {
  close_segment(run_dir, std::nullopt, "failed", error.empty() ? "unknown error" : error);
}

void record_run_field(const fs::path& run_dir, const std::string& key,
                      const std::string& json_value) {
  ordered_json record = read_record(run_dir);
  record[key] = ordered_json::parse(json_value);
  write_file_atomic(record_file(run_dir), record.dump(2) + "\n");
}

}  // namespace lathe::run
