// Train/val/test splits by ratio: seeded, stratified by class for classification.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace lathe::data {

/// Record indices of the three parts of a split, each sorted ascending.
struct SplitIndices {
  std::vector<int64_t> train, val, test;
};

/// Splits records 0..n-1 into train / val / test holding `val_fraction` and `test_fraction` of
/// them (the rest is train). The draw is a pure function of `seed`. With `strata` (N) int64 class
/// ids, each class is split in the same proportions (rounded per class), so every part keeps the
/// class balance of the whole.
///
///   auto parts = split_indices(150, 0.1, 0.1, /*seed=*/42, labels);   // 80/10/10, stratified
SplitIndices split_indices(int64_t n, double val_fraction, double test_fraction, uint64_t seed,
                           const at::Tensor& strata = {});

}  // namespace lathe::data
