// DataLoader: worker threads, bounded prefetch, collation, seeded order, resumable position.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "lathe/data/dataset.h"
#include "lathe/data/shard.h"
#include "lathe/data/tensor_data.h"

namespace lathe::data {

namespace detail {
/// Makes torch's CPU ops run single-threaded in the calling thread only (loader workers).
void single_threaded_ops();
}  // namespace detail

/// Worker threads that leave the cores to training: half the hardware threads, at least 1,
/// at most 8 (2 cores → 1 worker).
int default_num_workers();

/// How a DataLoader batches, orders and prefetches.
struct LoaderOptions {
  int64_t batch_size = 32;
  bool shuffle = false;          ///< a new order each epoch, a pure function of (seed, epoch)
  bool drop_last = false;        ///< drop the last, partial batch
  uint64_t seed = 0;             ///< drives the order and every transform's RNG
  int num_workers = -1;          ///< reading/transforming threads; -1 = default, 0 = inline
  int prefetch = 2;              ///< batches each worker may have ready ahead of the consumer
  bool pin_memory = true;        ///< collate into page-locked memory when CUDA is present
  Transform transform;           ///< input transform run in the workers (empty = none)
  Shard shard;                   ///< data-parallel: this rank's part of each epoch's order

  LoaderOptions& with_batch_size(int64_t v) { batch_size = v; return *this; }
  LoaderOptions& with_shuffle(bool v) { shuffle = v; return *this; }
  LoaderOptions& with_drop_last(bool v) { drop_last = v; return *this; }
  LoaderOptions& with_seed(uint64_t v) { seed = v; return *this; }
  LoaderOptions& with_num_workers(int v) { num_workers = v; return *this; }
  LoaderOptions& with_prefetch(int v) { prefetch = v; return *this; }
  LoaderOptions& with_pin_memory(bool v) { pin_memory = v; return *this; }
  LoaderOptions& with_transform(Transform v) { transform = std::move(v); return *this; }
  LoaderOptions& with_shard(Shard v) { shard = v; return *this; }
};

/// Where a loader is: the epoch and how many of its batches were handed out. Saved in a
/// checkpoint and restored, the next batch is exactly the one the interrupted run would have seen.
struct LoaderPosition {
  int64_t epoch = 0;
  int64_t batch = 0;
  bool operator==(const LoaderPosition&) const = default;
};

/// Serves a Dataset in collated batches. Workers (each calling at::init_num_threads and running
/// its ops single-threaded) claim whole batches, read and transform their records and stack them
/// into contiguous (B, ...) tensors — into pinned memory when CUDA is present; at most
/// num_workers * prefetch batches wait ready. Batches come out in order. A record's transform
/// RNG is seeded from (seed, epoch, record index), so batches do not depend on the thread count.
/// An error while reading record i reaches the consumer as a DataError naming i. Threads are
/// joined when the epoch ends, on set_epoch/restore and in the destructor.
///
///   auto opts = LoaderOptions().with_batch_size(128).with_shuffle(true).with_seed(42);
///   DataLoader loader(train, opts);
///   for (int64_t epoch = 0; epoch < 10; ++epoch) {
///     loader.set_epoch(epoch);
///     while (auto batch = loader.next()) train_step(to_device(*batch, device));
///   }
class DataLoader : public BatchSource {
 public:
  DataLoader(std::shared_ptr<const Dataset> data, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// Batches per epoch.
  int64_t num_batches() const override;
  int64_t size() const override { return data_->size(); }
  int64_t batch_size() const { return options_.batch_size; }
  const Dataset& dataset() const { return *data_; }
  const LoaderOptions& options() const { return options_; }
  /// Worker threads in use (0 = batches are made by the caller's thread).
  int num_workers() const { return workers_count_; }

  /// Starts `epoch` from its first batch.
  void set_epoch(int64_t epoch) override { restore({epoch, 0}); }
  /// Continues at `position` (same seed and dataset → the same remaining batches).
  void restore(LoaderPosition position);
  /// The current position: the epoch and the number of batches next() has returned in it.
  LoaderPosition position() const { return {epoch_, taken_}; }

  /// The next batch of the epoch, or nullopt when the epoch is over.
  std::optional<Batch> next();

  /// Batch i of the current epoch (TensorLoader's interface, so a loop over i = 0..num_batches-1
  /// works with either): the prefetched batch when i is the next in order, else the loader
  /// restarts at i (a resumed run asking for batch k first continues exactly there).
  Batch batch(int64_t i) override;

  /// The record order of `epoch`: (N) int64 (a permutation with shuffle, else 0..N-1), or the
  /// shard's part of it (options().shard).
  at::Tensor epoch_order(int64_t epoch) const;

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  Batch make_batch(int64_t b) const;
  void start_workers();
  void stop_workers();
  void worker_loop();

  std::shared_ptr<const Dataset> data_;
  LoaderOptions options_;
  int workers_count_ = 0;
  bool pin_ = false;

  int64_t epoch_ = 0;
  int64_t taken_ = 0;               ///< batches handed out in this epoch
  std::vector<int64_t> order_;      ///< record order of epoch_

  mutable std::mutex mu_;
  std::condition_variable cv_;
  int64_t next_to_make_ = 0;        ///< the next batch a worker will claim
  std::map<int64_t, Slot> ready_;   ///< finished batches not yet taken
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

/// The batch on `device`; copies from pinned memory are non-blocking.
Batch to_device(const Batch& batch, c10::Device device);

}  // namespace lathe::data
