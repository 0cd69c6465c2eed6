// The orchestration of one run: data → sizes from the data → model → fit → test → files under
// runs/<name>/; and evaluating a finished run.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "lathe/config/config.h"
#include "lathe/config/data_info.h"
#include "lathe/data/loader.h"
#include "lathe/data/shard.h"
#include "lathe/train/trainer.h"

namespace lathe::run {

using train::Callback;
using train::EpochRecord;
using train::Metrics;
using train::Trainer;

/// A run's three loaders over one data section, all made by the data area's one entry point
/// (data::load_splits + make_loaders), and what the data says about the run. With an active
/// `shard` each loader reads that rank's part (train: batch_size / world records per batch).
struct RunLoaders {
  std::unique_ptr<data::BatchSource> train, val, test;
  config::DataInfo info;           ///< task, input signature, classes, vocabulary
  std::vector<double> mean, std;   ///< image normalisation applied (empty for other data)
  std::string preprocessing_json;  ///< csv: the fitted tabular preprocessing, saved with the run
};
RunLoaders make_run_loaders(const config::DataSection& cfg, uint64_t seed, data::Shard shard = {});

/// Writes back into `cfg` what the data answered: task.kind (and csv's data.task), the image
/// side (data.image_size), the normalisation used, and the model's `auto` sizes (checking the
/// given ones: a disagreement is a ConfigError naming both sides). Returns the log lines that
/// say what was inferred.
///
///   auto data = lathe::run::make_run_loaders(cfg.data, cfg.run.seed);
///   for (const auto& line : lathe::run::resolve_from_data(cfg, data)) fmt::print("{}\n", line);
std::vector<std::string> resolve_from_data(config::RunConfig& cfg, const RunLoaders& data);

/// What a finished run produced.
struct RunResult {
  std::filesystem::path run_dir;
  std::vector<EpochRecord> history;
  Metrics test;
  Metrics test_ema;  ///< the EMA weights' test metrics (trainer.ema), also in test_metrics.json
                     ///< as ema/<metric>
  double seconds = 0;
  /// SIGTERM / SIGINT (lathe::StopSignals) stopped training after a step: the checkpoint of that
  /// step was written (`resume_from`, on rank 0), the run's final weights and test were not.
  int stopped_by_signal = 0;
  std::filesystem::path resume_from;
};

/// Trains the run `cfg` describes and writes runs/<name>/: config.yaml (resolved: the task, the
/// model sizes and image side from the data, the fitted normalisation), classes.txt (class
/// names, when the data has them), metrics.jsonl, metrics.csv, tensorboard/events.out.tfevents.*,
/// model.safetensors (PyTorch names) and test_metrics.json.
///
///   auto cfg = lathe::config::load_config("configs/fashion_cnn.yaml");
///   auto result = lathe::run::train_from_config(cfg);
/// With `resume` ("auto", a checkpoint folder or a run folder) the run continues from that
/// checkpoint exactly where it stopped, mid-epoch included.
/// `extra` callbacks run after the standard ones (progress, loggers, checkpointer).
/// Started as one rank of several (RANK / WORLD_SIZE ... in the environment: torchrun or
/// `lathe train --devices N`), it trains data-parallel: weights broadcast from rank 0, gradients
/// all-reduced (cfg.dist), data sharded, metrics reduced; only rank 0 logs and writes files.
RunResult train_from_config(config::RunConfig cfg, const std::string& resume = "",
                            const std::vector<std::shared_ptr<Callback>>& extra = {});

/// The weights file a `--weights` option names for a run or checkpoint folder `dir`: empty →
/// dir/model.safetensors, "ema" → dir/model_ema.safetensors (trainer.ema's weights; a
/// CheckpointError when the run kept none), anything else → that file.
std::filesystem::path weights_file(const std::filesystem::path& dir,
                                   const std::filesystem::path& weights);

/// Drops the rows of a metrics.jsonl logged after `step` (and any line cut short by a crash).
void truncate_metrics_log(const std::filesystem::path& file, int64_t step);

/// Adds the callbacks every run gets from its config: progress, metrics.jsonl (appended to when
/// resuming), metrics.csv, TensorBoard, the learning-rate monitor and early stopping. Ranks other
/// than 0 of a data-parallel run (`main_rank` false) get early stopping only.
void add_standard_callbacks(Trainer& trainer, const config::RunConfig& cfg,
                            const std::filesystem::path& run_dir, bool resume,
                            bool main_rank = true);

/// Evaluates the weights of a finished run (or `weights` when given) on its config's test split.
/// `overrides` apply on top of the run's config.yaml (e.g. data.limit_test=1000).
Metrics evaluate_run(const std::filesystem::path& run_dir, const std::filesystem::path& weights,
                     const std::vector<std::string>& overrides);

}  // namespace lathe::run
