// A whole run from a config: data → model → fit → test → files under runs/<name>/.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "lathe/config/config.h"
#include "lathe/data/shard.h"
#include "lathe/data/tensor_data.h"
#include "lathe/train/trainer.h"

namespace lathe::train {

/// The three splits of a run's data, preprocessed the same way.
struct RunData {
  data::TensorDataset train, val, test;
  std::vector<double> mean, std;  ///< normalisation actually applied (fitted on train)
};

/// Loads `cfg.data` (source, limits, hold-out split, normalisation). Normalisation statistics
/// come from the config when given, else from the training split alone.
RunData load_run_data(const config::DataSection& cfg, uint64_t seed);

/// A run's three loaders over one data section: in memory for idx (TensorLoader), through the
/// data pipeline's worker DataLoader for csv, image_folder, text and text_csv. With an active
/// `shard` each loader reads that rank's part (train: batch_size / world records per batch).
struct RunLoaders {
  std::unique_ptr<data::BatchSource> train, val, test;
  std::vector<double> mean, std;   ///< image normalisation applied (empty for other data)
  std::string preprocessing_json;  ///< csv: the fitted tabular preprocessing, saved with the run
  std::vector<std::string> classes;  ///< class names in id order (csv, image_folder, text_csv)
};
RunLoaders make_run_loaders(const config::DataSection& cfg, uint64_t seed, data::Shard shard = {});

/// What a finished run produced.
struct RunResult {
  std::filesystem::path run_dir;
  std::vector<EpochRecord> history;
  Metrics test;
  double seconds = 0;
};

/// Trains the run `cfg` describes and writes runs/<name>/: config.yaml (resolved, with the fitted
/// normalisation), classes.txt (class names, when the data has them), metrics.jsonl, metrics.csv, tensorboard/events.out.tfevents.*,
/// model.safetensors (PyTorch names) and test_metrics.json.
///
///   auto cfg = lathe::config::load_config("configs/fashion_cnn.yaml");
///   auto result = lathe::train::train_from_config(cfg);
/// With `resume` ("auto", a checkpoint folder or a run folder) the run continues from that
/// checkpoint exactly where it stopped, mid-epoch included.
/// `extra` callbacks run after the standard ones (progress, loggers, checkpointer).
/// Started as one rank of several (RANK / WORLD_SIZE ... in the environment: torchrun or
/// `lathe train --devices N`), it trains data-parallel: weights broadcast from rank 0, gradients
/// all-reduced (cfg.dist), data sharded, metrics reduced; only rank 0 logs and writes files.
RunResult train_from_config(config::RunConfig cfg, const std::string& resume = "",
                            const std::vector<std::shared_ptr<Callback>>& extra = {});

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

}  // namespace lathe::train
