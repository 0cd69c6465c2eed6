// In-memory datasets: (inputs, targets) tensors, seeded stratified hold-out splits, a batch loader.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/data/shard.h"

namespace lathe::data {

/// A dataset held as two tensors whose first dimension indexes records.
struct TensorDataset {
  at::Tensor inputs;   ///< (N, ...)
  at::Tensor targets;  ///< (N) class ids (int64) or (N, ...) values
  int64_t size() const { return inputs.defined() ? inputs.size(0) : 0; }
  /// The records at `indices` (int64, any order), copied.
  TensorDataset subset(const at::Tensor& indices) const;
  /// The first n records (all when n <= 0 or n >= size()).
  TensorDataset head(int64_t n) const;
};

/// One batch, already collated: inputs (B, ...) and targets (B, ...).
struct Batch {
  at::Tensor inputs;
  at::Tensor targets;
  int64_t size() const { return inputs.size(0); }
};

/// What the Trainer reads batches from: TensorLoader (in memory) and DataLoader (worker threads).
/// An epoch's order is a pure function of (seed, epoch); batch(i) may start anywhere (resume).
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual int64_t num_batches() const = 0;
  /// Selects the epoch whose batches batch(i) returns.
  virtual void set_epoch(int64_t epoch) = 0;
  virtual Batch batch(int64_t i) = 0;
  /// Records in the underlying dataset.
  virtual int64_t size() const = 0;
};

/// Splits `all` into (kept, held_out), with `fraction` of the records held out. The draw is a
/// pure function of `seed`. With `stratify` (classification targets), each class is split in the
/// same proportion, so the held-out part has the class balance of the whole.
///
///   auto [train, val] = split_holdout(full_train, 0.1, /*seed=*/42);
std::pair<TensorDataset, TensorDataset> split_holdout(const TensorDataset& all, double fraction,
                                                      uint64_t seed, bool stratify = true);

/// uint8 images (N, H, W) or (N, H, W, C) → float (N, C, H, W) in [0, 1].
at::Tensor images_to_float(const at::Tensor& images);

/// Per-channel mean and standard deviation of float images (N, C, H, W).
std::pair<std::vector<double>, std::vector<double>> channel_stats(const at::Tensor& images);

/// (x - mean[c]) / std[c] per channel of (N, C, H, W); mean and std have C entries (or 1).
at::Tensor normalize(const at::Tensor& images, const std::vector<double>& mean,
                     const std::vector<double>& std);

/// Serves a TensorDataset in batches; the order of an epoch is a pure function of (seed, epoch),
/// so a run that restarts at an epoch sees the same batches.
///
///   TensorLoader loader(train, 128, /*shuffle=*/true, /*seed=*/42);
///   loader.set_epoch(3);
///   for (int64_t i = 0; i < loader.num_batches(); ++i) { Batch b = loader.batch(i); ... }
class TensorLoader : public BatchSource {
 public:
  TensorLoader(TensorDataset data, int64_t batch_size, bool shuffle, uint64_t seed,
               bool drop_last = false);

  /// Reads only `shard`'s part of every epoch's order (data-parallel training).
  void set_shard(Shard shard);

  int64_t num_batches() const override;
  int64_t size() const override { return data_.size(); }
  int64_t batch_size() const { return batch_size_; }
  const TensorDataset& dataset() const { return data_; }
  /// Draws the order of `epoch` (no-op without shuffle).
  void set_epoch(int64_t epoch) override;
  /// Batch i of the current epoch, on the CPU (in page-locked memory when CUDA is present).
  Batch batch(int64_t i) override;

 private:
  TensorDataset data_;
  int64_t batch_size_;
  bool shuffle_;
  uint64_t seed_;
  bool drop_last_;
  bool pin_;  ///< batches gathered into pinned memory (CUDA present)
  Shard shard_;
  at::Tensor order_;  ///< (N) int64 record order of the current epoch (this shard's part)
};

/// A 64-bit seed for stream `stream` derived from `seed` (splitmix64), so components draw
/// independent, reproducible sequences from the one run seed.
uint64_t derive_seed(uint64_t seed, uint64_t stream);

}  // namespace lathe::data
