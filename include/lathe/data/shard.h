// Shard: the part of each epoch's record order one rank reads in data-parallel training
// (PyTorch's DistributedSampler: pad to a multiple of the world, then every world-th record).
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace lathe::data {

/// Which records of an epoch this process reads: rank `rank` of `world` processes. The default
/// (rank 0 of 1) reads everything.
struct Shard {
  int64_t rank = 0;
  int64_t world = 1;
  /// Training: repeat the order's first records until every rank has the same count (every rank
  /// must take the same number of steps). Evaluation: no padding, so each record counts once
  /// and the reduced metrics are exact (ranks may differ by one record).
  bool pad = true;
  bool active() const { return world > 1; }
};

/// The records of `order` (N) that `shard` reads: order padded by repeating its start to
/// ceil(N / world) · world when shard.pad, then order[rank], order[rank + world], ... — so the
/// ranks' shards are disjoint (but for padding) and together cover every record. Every rank
/// computes the same full order (a pure function of seed and epoch), so the shards agree.
///
///   at::Tensor mine = shard_order(at::randperm(n, gen), {rank, world});  // (ceil(n / world))
at::Tensor shard_order(const at::Tensor& order, const Shard& shard);

/// Records `shard` reads of a dataset of n records.
int64_t shard_size(int64_t n, const Shard& shard);

}  // namespace lathe::data
