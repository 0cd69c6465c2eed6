// In-memory datasets: subsets, stratified seeded splits, image scaling and the batch loader.
#include "lathe/data/tensor_data.h"

#include <cmath>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/randperm.h>
#include <ATen/ops/tensor.h>

#include "lathe/core/error.h"
#include "lathe/data/split.h"

namespace lathe::data {

uint64_t derive_seed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

TensorDataset TensorDataset::subset(const at::Tensor& indices) const {
  return {inputs.index_select(0, indices), targets.index_select(0, indices)};
}

TensorDataset TensorDataset::head(int64_t n) const {
  if (n <= 0 || n >= size()) return *this;
  return {inputs.narrow(0, 0, n), targets.narrow(0, 0, n)};
}

std::pair<TensorDataset, TensorDataset> split_holdout(const TensorDataset& all, double fraction,
                                                      uint64_t seed, bool stratify) {
  LATHE_CHECK(fraction >= 0 && fraction < 1, DataError,
              "hold-out fraction {} must be in [0, 1)", fraction);
  const bool by_class = stratify && all.targets.dim() == 1 &&
                        !at::isFloatingType(all.targets.scalar_type());
  const SplitIndices parts =
      split_indices(all.size(), 0.0, fraction, seed, by_class ? all.targets : at::Tensor());
  const auto as_tensor = [](const std::vector<int64_t>& v) {
    return at::tensor(v, at::TensorOptions().dtype(at::kLong));
  };
  return {all.subset(as_tensor(parts.train)), all.subset(as_tensor(parts.test))};
}

at::Tensor images_to_float(const at::Tensor& images) {
  LATHE_CHECK(images.dim() == 3 || images.dim() == 4, DataError,
              "images must be (N, H, W) or (N, H, W, C), got {} dimensions", images.dim());
  at::Tensor x = images.dim() == 3 ? images.unsqueeze(1) : images.permute({0, 3, 1, 2});
  return x.to(at::kFloat).div_(255.0).contiguous();  // (N, C, H, W)
}

std::pair<std::vector<double>, std::vector<double>> channel_stats(const at::Tensor& images) {
  LATHE_CHECK(images.dim() == 4, DataError, "channel_stats wants (N, C, H, W), got {} dims",
              images.dim());
  std::vector<double> mean, std;
  for (int64_t c = 0; c < images.size(1); ++c) {
    const at::Tensor ch = images.select(1, c).to(at::kDouble);
    mean.push_back(ch.mean().item<double>());
    std.push_back(ch.std().item<double>());
  }
  return {mean, std};
}

at::Tensor normalize(const at::Tensor& images, const std::vector<double>& mean,
                     const std::vector<double>& std) {
  const int64_t c = images.size(1);
  LATHE_CHECK(mean.size() == std.size() &&
                  (static_cast<int64_t>(mean.size()) == c || mean.size() == 1),
              DataError, "normalisation has {} mean and {} std values for {} channels",
              mean.size(), std.size(), c);
  const auto opts = images.options();
  const at::Tensor m = at::tensor(mean, opts.dtype(at::kDouble)).to(opts.dtype()).view({1, -1, 1, 1});
  const at::Tensor s = at::tensor(std, opts.dtype(at::kDouble)).to(opts.dtype()).view({1, -1, 1, 1});
  return images.sub(m).div_(s);
}

TensorLoader::TensorLoader(TensorDataset data, int64_t batch_size, bool shuffle, uint64_t seed,
                           bool drop_last)
    : data_(std::move(data)),
      batch_size_(batch_size),
      shuffle_(shuffle),
      seed_(seed),
      drop_last_(drop_last),
      pin_(at::globalContext().hasCUDA()) {
  LATHE_CHECK(batch_size_ > 0, DataError, "batch size must be positive, got {}", batch_size_);
  LATHE_CHECK(data_.inputs.defined() && data_.targets.defined() &&
                  data_.inputs.size(0) == data_.targets.size(0),
              DataError, "inputs and targets must have the same number of records");
  set_epoch(0);
}

void TensorLoader::set_shard(Shard shard) {
  shard_ = shard;
  set_epoch(0);
}

int64_t TensorLoader::num_batches() const {
  const int64_t n = shard_size(data_.size(), shard_);
  return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
}

void TensorLoader::set_epoch(int64_t epoch) {
  const auto opts = at::TensorOptions().dtype(at::kLong);
  if (!shuffle_) {
    order_ = shard_order(at::arange(data_.size(), opts), shard_);
    return;
  }
  auto gen = at::make_generator<at::CPUGeneratorImpl>(
      derive_seed(seed_, /*stream=*/1000 + static_cast<uint64_t>(epoch)));
  order_ = shard_order(at::randperm(data_.size(), gen, opts), shard_);
}

Batch TensorLoader::batch(int64_t i) {
  LATHE_CHECK(i >= 0 && i < num_batches(), DataError, "batch {} out of range [0, {})", i,
              num_batches());
  const int64_t start = i * batch_size_;
  const int64_t len = std::min(batch_size_, order_.size(0) - start);
  const at::Tensor idx = order_.narrow(0, start, len);
  if (!pin_) return {data_.inputs.index_select(0, idx), data_.targets.index_select(0, idx)};
  // Gathered straight into page-locked memory: one copy, and DeviceFeed's copy to the GPU is
  // asynchronous without pinning anything on the training thread.
  const auto gather = [&](const at::Tensor& all) {
    std::vector<int64_t> shape = all.sizes().vec();
    shape[0] = len;
    at::Tensor out = at::empty(shape, all.options().pinned_memory(true));  // (B, ...)
    return at::index_select_out(out, all, 0, idx);
  };
  return {gather(data_.inputs), gather(data_.targets)};
}

}  // namespace lathe::data
