// From a run config's data section to train/val/test datasets, their transforms and loaders.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lathe/config/config.h"
#include "lathe/config/data_info.h"
#include "lathe/data/dataset.h"
#include "lathe/data/loader.h"
#include "lathe/data/shard.h"

namespace lathe::data {

/// The three splits of a run's data, everything fitted on the training split, and what the data
/// says about the run (task, input signature, classes: `info`).
struct DataSplits {
  std::shared_ptr<const Dataset> train, val, test;
  Transform train_transform;         ///< augmentation + normalisation, run in loader workers
  Transform eval_transform;          ///< deterministic resizing + normalisation (val, test)
  config::DataInfo info;             ///< task, input signature (after the transforms), classes
  std::vector<double> mean, std;     ///< image normalisation applied by the transforms
  std::string preprocessing_json;    ///< csv: the fitted TabularPreprocessor (save with the run)
  int64_t skipped = 0;               ///< bad records left out (skip_bad_records)
  /// The splits are TensorSources already in their final form (idx without augmentation or
  /// resizing: normalised once, in memory); the transforms are the identity.
  bool in_memory = false;
};

/// Loads `cfg.source` and splits it, seeded by `seed` — the one entry point of every source;
/// each honours the data.* keys config/names.h lists for it (the config refuses the others):
///  - idx: the MNIST layout's train/t10k files; data.classes keeps those class ids (relabelled
///    in that order); val_fraction of train held out (stratified); mean/std from the config or
///    the training split; records are [0, 1] float (1, H, W), resized to image_size.
///  - csv: one file (target column `cfg.target`), split val/test by fraction (stratified for
///    classification) or with `cfg.test_path` as the test set; preprocessing fitted on train.
///  - image_folder: `path/train` and `path/test` (and `path/val`) when present, else `path` split
///    by fraction, stratified; records are uint8 (3, H, W), made image_size² by the transforms.
///  - text: a corpus in seq_len windows of bytes, or of `tokenizer`'s ids (vocab_size, eos and
///    pad from it), split in order (train, then val, then test).
///  - text_csv: (text_column, target) rows tokenized with the WordPiece `vocab`, stratified.
/// Errors name the file and line or index; config mistakes are ConfigErrors naming the key.
///
///   DataSplits splits = lathe::data::load_splits(cfg.data, cfg.run.seed);
///   auto loaders = lathe::data::make_loaders(cfg.data, splits, cfg.run.seed);
DataSplits load_splits(const config::DataSection& cfg, uint64_t seed);

/// Loaders over the splits: train shuffled with train_transform, val and test in order with
/// eval_transform and eval_batch_size; all with cfg.num_workers.
struct Loaders {
  std::unique_ptr<DataLoader> train, val, test;
};
/// With an active `shard` (data-parallel), each loader reads only that rank's records: train
/// padded, with data.batch_size / shard.world records per batch (batch_size is the global batch);
/// val and test unpadded, so reduced metrics count every record once.
Loaders make_loaders(const config::DataSection& cfg, const DataSplits& splits, uint64_t seed,
                     Shard shard = {});

/// The three batch sources a run trains with, over the splits: TensorLoader when the splits are
/// `in_memory` (whole batches sliced from memory, no per-record work), else the worker
/// DataLoader (make_loaders). Empty val / test splits give null sources. Sharded as make_loaders.
struct BatchSources {
  std::unique_ptr<BatchSource> train, val, test;
};
BatchSources make_batch_sources(const config::DataSection& cfg, const DataSplits& splits,
                                uint64_t seed, Shard shard = {});

/// The image transforms `augment` names (config::augmentations(): "random_crop[:pad]",
/// "hflip[:p]", "random_resized_crop[:min_scale]"), for images of `size`²; ConfigError on an
/// unknown name.
std::vector<Transform> parse_augment(const std::vector<std::string>& augment, int64_t size);

}  // namespace lathe::data
