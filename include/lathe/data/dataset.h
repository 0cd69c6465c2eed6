// The Dataset interface (size, get), per-example transforms with their seeded RNG, and adapters.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/data/tensor_data.h"

namespace lathe::data {

/// One record: an input tensor and its target (a 0-dim class id, a value or a sequence).
struct Example {
  at::Tensor input;
  at::Tensor target;
};

/// A sized, random-access collection of examples. get() must be safe to call from several loader
/// workers at once (const, no shared mutable state) and names the record in its errors.
///
///   class Squares : public lathe::data::Dataset {
///     int64_t size() const override { return 10; }
///     Example get(int64_t i) const override { return {at::scalar_tensor(i), at::scalar_tensor(i *
///     i)}; }
///   };
class Dataset {
 public:
  virtual ~Dataset() = default;
  /// Number of records.
  virtual int64_t size() const = 0;
  /// Record `index` in [0, size()).
  virtual Example get(int64_t index) const = 0;
  /// Where record `index` comes from (its file), for errors raised after get(), in the
  /// loader's transforms; empty when the index says it all.
  virtual std::string origin(int64_t index) const { return {}; }
};

/// The generator a transform draws from; the loader seeds one per (seed, epoch, record).
using Rng = std::mt19937_64;

/// A per-example input transform run inside loader workers: (input, rng) → input.
using Transform = std::function<at::Tensor(at::Tensor, Rng&)>;

/// Applies `steps` in order (an empty list is the identity).
Transform compose(std::vector<Transform> steps);

/// A uniform double in [lo, hi) drawn from `rng` (the same on every platform, unlike
/// std::uniform_real_distribution).
double uniform(Rng& rng, double lo, double hi);

/// A TensorDataset seen through the Dataset interface: get(i) = (inputs[i], targets[i]).
class TensorSource : public Dataset {
 public:
  explicit TensorSource(TensorDataset data);
  int64_t size() const override { return data_.size(); }
  Example get(int64_t index) const override;
  const TensorDataset& tensors() const { return data_; }

 private:
  TensorDataset data_;
};

/// The records of `base` at `indices` (a view: no copy of the data).
class SubsetSource : public Dataset {
 public:
  SubsetSource(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices);
  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  Example get(int64_t index) const override;
  std::string origin(int64_t index) const override;

 private:
  std::shared_ptr<const Dataset> base_;
  std::vector<int64_t> indices_;
};

/// Reads every record of `data` into one TensorDataset (inputs stacked to (N, ...)); for small
/// sources (tabular, text) that the trainer then serves from memory.
TensorDataset materialize(const Dataset& data);

}  // namespace lathe::data
