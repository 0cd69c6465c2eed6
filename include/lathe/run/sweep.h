// `lathe sweep`: hyperparameter search over any config key — grid or seeded random sampling,
// ASHA early-stopping of weak trials, resumable from a state file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lathe::run {

/// One searched key: choice (values), uniform / loguniform (low, high), int (low..high, step).
struct ParamSpec {
  std::string key;                  ///< dotted config key, e.g. optim.lr
  std::string type;                 ///< choice | uniform | loguniform | int
  std::vector<std::string> values;  ///< choice: the values as YAML scalars
  double low = 0, high = 0;
  int64_t step = 1;                 ///< int: spacing of the grid and of random draws
  int64_t grid_points = 0;          ///< uniform / loguniform in a grid: evenly spaced points
};

/// A sweep file: the base run config, the space, how to search and how to schedule trials.
///
///   base: ../fashion_cnn.yaml
///   overrides: [data.limit_train=5000]
///   name: fashion_lr
///   metric: val/accuracy
///   mode: max
///   search: random        # or grid
///   trials: 12            # random only
///   seed: 0
///   scheduler: asha       # or none: every trial runs all trainer.max_epochs
///   devices: [cuda:0, cuda:1]   # optional: trials in parallel, one per device
///   asha: {min_epochs: 1, reduction_factor: 3}
///   space:
///     optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}
///     model.hidden: {type: choice, values: [32, 64, 128]}
struct SweepConfig {
  std::filesystem::path base;       ///< run config (relative paths resolve from the sweep file)
  std::vector<std::string> overrides;
  std::string name = "sweep";
  std::string dir = "runs";         ///< the sweep folder is <dir>/<name>
  std::string metric = "val/loss";
  std::string mode = "min";
  std::string search = "random";
  int64_t trials = 8;
  uint64_t seed = 0;
  std::string scheduler = "asha";
  int64_t min_epochs = 1;           ///< ASHA's first rung
  int64_t reduction_factor = 3;     ///< ASHA's eta: keep the top 1/eta at each rung
  std::vector<ParamSpec> space;
  /// Devices to run trials on in parallel, one trial per entry (e.g. [cuda:0, cuda:1]); empty:
  /// one trial at a time on the base config's run.device. Parallel trials share the process,
  /// so their runs are not bit-reproducible (they draw from the same global generators).
  std::vector<std::string> devices;
  std::string source;               ///< the sweep file
};

/// Reads a sweep file; errors are ConfigErrors naming the file, line and key.
SweepConfig load_sweep(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});

/// The trials of a sweep: every grid point, or `trials` seeded random draws. Each trial is a list
/// of "key=value" overrides; the same config and seed always give the same trials.
std::vector<std::vector<std::string>> sample_trials(const SweepConfig& cfg);

/// ASHA's rungs for a run of max_epochs: min_epochs · eta^k, below max_epochs, then max_epochs.
std::vector<int64_t> asha_rungs(int64_t min_epochs, int64_t eta, int64_t max_epochs);

/// One trial's record in the sweep state.
struct TrialRecord {
  int64_t id = 0;
  std::vector<std::string> params;    ///< key=value overrides
  std::string status = "pending";     ///< pending | paused | running | completed | stopped | failed
  std::map<int64_t, double> rungs;    ///< epochs trained → validation metric there
  int64_t epochs = 0;                 ///< epochs trained so far
  std::string error;
  /// Wall-clock [start, end] of each training segment (seconds since the Unix epoch): how long
  /// the trial took, and which trials ran at the same time.
  std::vector<std::pair<double, double>> segments;
};

/// Result of a sweep: every trial and the best one.
struct SweepResult {
  std::vector<TrialRecord> trials;
  int64_t best = -1;                  ///< index into trials, -1 when none finished a rung
  int64_t total_epochs = 0;
  std::filesystem::path folder;
};

/// Runs (or, with resume, continues) a sweep, one trial at a time or one per device of
/// cfg.devices, picking each next job by ASHA's rule as results arrive. Each trial is a
/// normal run folder <sweep>/trial-NNN; sweep_state.json records every decision atomically, so
/// a killed sweep resumes without redoing a finished trial. Writes summary.csv and
/// best_config.yaml, and prints the summary table.
SweepResult run_sweep(const SweepConfig& cfg, bool resume);

}  // namespace lathe::run
