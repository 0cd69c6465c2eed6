// Finding and comparing runs: what each run folder under runs/ holds (status, progress, best and
// test metrics, wall time), sorted, filtered, as a table or JSON, and the difference of two runs;
// and run.json, the record of a run's starts and ends that the listing reads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lathe/train/callback.h"

namespace lathe::run {

/// What `lathe runs` knows of one run folder. Everything comes from the files the run left:
/// config.yaml, metrics.jsonl, test_metrics.json, checkpoints/last/state.json and run.json.
struct RunSummary {
  std::string name;             ///< the folder's path below the listed root ("sweep/trial-003")
  std::filesystem::path dir;
  /// finished | stopped early | failed | killed | running | unreadable
  std::string status;
  /// stopped early: the reason; failed: the error; killed: where it can resume from;
  /// unreadable: why
  std::string detail;
  bool resumable = false;       ///< checkpoints/last holds a complete checkpoint
  int64_t resume_step = -1;     ///< its step
  std::string model, data, task;
  int64_t epochs = 0, max_epochs = 0;  ///< epochs logged (the last may be partial) / planned
  int64_t steps = 0, max_steps = 0;    ///< optimizer steps logged / trainer.max_steps (0 = none)
  std::string monitor;          ///< the validation metric checkpoints watch (val/accuracy, ...)
  bool higher_is_better = false;
  std::optional<double> best;   ///< its best logged value
  train::Metrics test;          ///< test_metrics.json
  std::optional<double> wall_s; ///< wall time over every start of the run
  double started_unix = 0;      ///< first start (seconds since the epoch; 0 = unknown)
  std::map<std::string, std::string> config;  ///< config.yaml flattened to dotted keys

  /// The value of a listing key: name, model, data, task, status, resumable, epochs, steps,
  /// monitor, best, wall, started, test.<metric>, or a config key (optim.lr, model.hidden).
  std::optional<std::string> field(const std::string& key) const;
  /// "killed (resumable from step 40)", "stopped early (...)", "unreadable: ...".
  std::string status_text() const;
};

/// Reads one run folder. Never throws for a malformed folder: it comes back with status
/// "unreadable" and the reason in `detail` (a missing config.yaml, a damaged metrics.jsonl ...).
RunSummary summarize_run(const std::filesystem::path& dir, const std::string& name = "");

/// Every run under `root`: each folder holding config.yaml, metrics.jsonl or run.json, and one
/// level below folders that hold runs (a sweep's trials); other folders as unreadable. Sorted by
/// start time. A missing root is a ConfigError.
std::vector<RunSummary> list_runs(const std::filesystem::path& root);

/// Keeps the runs whose field `key` equals `value` for every "key=value" in `filters` (numbers
/// compare as numbers: optim.lr=1e-3 matches 0.001). A filter without '=' or with a key no run
/// has is a ConfigError listing the keys.
void filter_runs(std::vector<RunSummary>& runs, const std::vector<std::string>& filters);

/// Orders by `key` (RunSummary::field): numbers numerically, text alphabetically; metric keys
/// (best, test.<metric>) best first by the metric's direction. Runs without the key go last.
/// `reverse` flips the order. An unknown key is a ConfigError.
void sort_runs(std::vector<RunSummary>& runs, const std::string& key, bool reverse = false);

/// One line per run under a header: NAME STARTED MODEL DATA EPOCHS STEPS WALL BEST TEST STATUS.
std::string format_runs_table(const std::vector<RunSummary>& runs);
/// The runs as a JSON array of objects (every RunSummary field, config included).
std::string runs_json(const std::vector<RunSummary>& runs);

/// What differs between two runs: config keys (dotted; "" where a run lacks the key) and
/// metrics (best, test.<metric>, wall) with b − a.
struct RunDiff {
  struct Value {
    std::string key, a, b;
  };
  struct Delta {
    std::string key;
    std::optional<double> a, b;
  };
  std::vector<Value> config;
  std::vector<Delta> metrics;
};
RunDiff diff_runs(const RunSummary& a, const RunSummary& b);
std::string format_diff(const RunSummary& a, const RunSummary& b, const RunDiff& diff);
std::string diff_json(const RunSummary& a, const RunSummary& b, const RunDiff& diff);

/// A YAML document's scalars and lists as dotted keys → text ("optim.schedule.name" → "cosine",
/// lists in flow style "[8, 16]"). Malformed YAML is a ConfigError naming `origin`.
std::map<std::string, std::string> flatten_yaml(const std::string& yaml,
                                                const std::string& origin);

/// run.json: the run's starts (time, host, pid) and ends (time, wall seconds, why it stopped).
/// record_run_start appends a start (a resumed run keeps its earlier ones); record_run_end
/// closes the last one. `stopped_early` is the stop reason when training ended before its plan
/// (early stopping), empty otherwise.
void record_run_start(const std::filesystem::path& run_dir, const std::string& resumed_from);
void record_run_end(const std::filesystem::path& run_dir, double seconds,
                    const std::string& stopped_early);
/// Closes the last start of run.json as failed, with the error that ended it.
void record_run_failed(const std::filesystem::path& run_dir, const std::string& error);
/// Adds `key` → `value` (a JSON text) at the top of run.json (e.g. the MLflow run it was
/// tracked as).
void record_run_field(const std::filesystem::path& run_dir, const std::string& key,
                      const std::string& json_value);

/// The rows of a metrics.jsonl (non-numeric values such as null left out). A last line cut short
/// by a crash is skipped; any other malformed line is a CheckpointError naming the file and line.
std::vector<train::LogEvent> read_metrics_log(const std::filesystem::path& file);

}  // namespace lathe::run
