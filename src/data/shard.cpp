// shard_order: DistributedSampler's arithmetic over a loader's epoch order.
#include "lathe/data/shard.h"

#include <ATen/ATen.h>

#include "lathe/core/error.h"

namespace lathe::data {

int64_t shard_size(int64_t n, const Shard& shard) {
  if (!shard.active()) return n;
  if (shard.pad) return (n + shard.world - 1) / shard.world;
  return n / shard.world + (shard.rank < n % shard.world ? 1 : 0);
}

at::Tensor shard_order(const at::Tensor& order, const Shard& shard) {
  LATHE_CHECK(shard.world >= 1 && shard.rank >= 0 && shard.rank < shard.world, DataError,
              "shard: rank {} is outside a world of {} processes", shard.rank, shard.world);
  if (!shard.active()) return order;
  const int64_t n = order.size(0);
  at::Tensor full = order;  // (N)
  if (shard.pad && n > 0 && n % shard.world != 0) {
    const int64_t padded = (n + shard.world - 1) / shard.world * shard.world;
    const int64_t repeats = (padded + n - 1) / n;  // more than once only when n < world
    full = order.repeat({repeats}).narrow(0, 0, padded);
  }
  // Every world-th record starting at rank: (ceil((N' - rank) / world))
  return full.slice(0, shard.rank, full.size(0), shard.world).contiguous();
}

}  // namespace lathe::data
