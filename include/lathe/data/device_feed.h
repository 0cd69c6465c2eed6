// DeviceFeed: a BatchSource's batches on the training device, the next one copied ahead while the
// current one computes (pinned memory, non-blocking copies on a side stream on CUDA).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include <c10/core/Device.h>

#include "lathe/data/tensor_data.h"

namespace lathe::data {

/// Hands out batches first, first + 1, ... of `source` on `device`. On CUDA, batch i + 1 is
/// copied on a side stream as soon as batch i is handed out (asynchronously from the pinned
/// memory lathe's loaders collate into), so the copy overlaps batch i's compute; the compute
/// stream waits for the copy only when it uses the batch. On the CPU a batch is handed out as the source gives it.
/// `channels_last`: 4-d inputs (B, C, H, W) come out in channels-last memory format.
///
///   DeviceFeed feed(loader, device, /*first=*/0);
///   for (int64_t i = 0; i < loader.num_batches(); ++i) { Batch b = feed.next(); ... }
class DeviceFeed {
 public:
  DeviceFeed(BatchSource& source, c10::Device device, int64_t first, bool channels_last = false);
  ~DeviceFeed();
  DeviceFeed(const DeviceFeed&) = delete;
  DeviceFeed& operator=(const DeviceFeed&) = delete;

  /// The next batch, on the device; a DataError past the source's last batch.
  Batch next();
  /// Index of the batch next() returns.
  int64_t position() const { return next_; }

 private:
  struct Copy;
  void start(int64_t i);

  BatchSource& source_;
  c10::Device device_;
  bool channels_last_;
  int64_t next_;
  std::unique_ptr<Copy> ahead_;  ///< CUDA: the batch being copied on the side stream
};

}  // namespace lathe::data
