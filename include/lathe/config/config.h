// The typed run config: YAML file + dotted key=value overrides → validated structs, and back.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/config/params.h"

namespace lathe::config {

/// run: where the run's files go, the seed, the device and threads.
struct RunSection {
  std::string name = "run";        ///< the run folder is <dir>/<name>
  std::string dir = "runs";
  uint64_t seed = 42;              ///< drives every RNG (weights, shuffling, splits, dropout)
  std::string device = "auto";     ///< auto | cpu | cuda | cuda:N
  int threads = 0;                 ///< intra-op threads; 0 = one per core
  bool deterministic = false;      ///< deterministic algorithms (bit-identical reruns on CPU)
};

/// data: the source and how it is split, preprocessed and batched.
struct DataSection {
  std::string source = "idx";      ///< idx | csv | image_folder | text | text_csv
  std::string path;                ///< the source's folder or file (required)
  std::string test_path;           ///< a separate test file/folder (csv, text_csv); empty = split off
  double val_fraction = 0.1;       ///< part of the training set held out for validation
  double test_fraction = 0.1;      ///< part held out for test when the source has no test set
  int64_t batch_size = 128;
  int64_t eval_batch_size = 1000;
  int64_t limit_train = 0;         ///< use only the first N training records (0 = all)
  int64_t limit_test = 0;          ///< use only the first N test records (0 = all)
  std::vector<double> mean;        ///< per-channel normalisation; empty = computed on train
  std::vector<double> std;
  int num_workers = -1;            ///< loader threads; -1 = half the cores (at least 1)
  bool skip_bad_records = false;   ///< skip malformed CSV rows / unreadable images (counted) instead of failing
  // csv and text_csv
  std::string target;              ///< the target (label) column
  std::string task = "auto";       ///< auto | classification | regression
  std::string impute = "none";     ///< every column: none | drop | mean | median | most_frequent | constant
  std::string outliers = "none";   ///< every numeric column: none | zscore | iqr
  std::string scale = "standard";  ///< every numeric column: none | standard | minmax
  std::string encode = "onehot";   ///< every categorical column: onehot | label
  Params columns{"data.columns"};  ///< per column: name: [impute=median, scale=minmax, ...]
  // images
  int64_t image_size = 0;          ///< train/eval size (square); 0 = as stored (idx) / 224 (folders)
  std::vector<std::string> augment;  ///< train only: random_crop[:pad], hflip, random_resized_crop
  // text
  int64_t seq_len = 128;           ///< text: window length in bytes
  std::string vocab;               ///< text_csv: a BERT vocab.txt
  int64_t max_length = 128;        ///< text_csv: tokens per record ([CLS] ... [SEP] [PAD]...)
  std::string text_column = "text";  ///< text_csv: the column holding the text
};

/// model: a zoo name plus that model's own options (checked by the model's factory).
struct ModelSection {
  std::string name;                ///< registry name, e.g. convnet (required)
  std::string name_where;          ///< where name was set ("run.yaml:7"), for errors
  Params params{"model"};          ///< every other key under model:
};

/// optim: optimizer and learning-rate schedule.
struct OptimSection {
  std::string name = "adamw";      ///< sgd | adam | adamw
  double lr = 1e-3;
  double weight_decay = 0.0;
  double momentum = 0.9;           ///< sgd only
  bool nesterov = false;           ///< sgd only
  std::vector<double> betas = {0.9, 0.999};  ///< adam, adamw
  std::string schedule = "constant";  ///< constant | cosine | onecycle
  double warmup_fraction = 0.0;    ///< linear warmup over this part of all steps
  double min_lr_ratio = 0.0;       ///< cosine floor as a fraction of lr
};

/// trainer: how long and how it reports.
struct TrainerSection {
  int64_t max_epochs = 5;
  int64_t log_every_n_steps = 50;
  std::string progress = "auto";   ///< auto (bar on a terminal) | bar | plain | none
};

/// A whole run config. `source` is the file it was read from (or "<string>").
struct RunConfig {
  RunSection run;
  DataSection data;
  ModelSection model;
  OptimSection optim;
  TrainerSection trainer;
  std::string source;

  /// runs/<name>
  std::filesystem::path run_dir() const { return std::filesystem::path(run.dir) / run.name; }
};

/// Reads a YAML config file and applies "section.key=value" overrides (values in YAML syntax, so
/// `data.mean=[0.5]` sets a list). Every problem is a ConfigError naming the file, line and key:
/// an unknown key (with a "did you mean"), a wrong type, a missing required field, a bad override.
///
///   auto cfg = lathe::config::load_config("configs/fashion_cnn.yaml", {"trainer.max_epochs=1"});
RunConfig load_config(const std::filesystem::path& file,
                      const std::vector<std::string>& overrides = {});

/// Same as load_config, from YAML text; `origin` names it in errors.
RunConfig parse_config(std::string_view yaml, std::string_view origin,
                       const std::vector<std::string>& overrides = {});

/// A model: section alone, from a name and "key=value" options (as `lathe info --model` takes
/// them); the same typing and errors as in a config file.
ModelSection parse_model_section(const std::string& name, const std::vector<std::string>& options);

/// The resolved config (every default filled in) as YAML; load_config reads it back unchanged.
std::string to_yaml(const RunConfig& cfg);

}  // namespace lathe::config
