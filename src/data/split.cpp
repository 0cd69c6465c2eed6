// Seeded, optionally stratified train/val/test index splits.
#include "lathe/data/split.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/randperm.h>

#include "lathe/core/error.h"
#include "lathe/data/tensor_data.h"

namespace lathe::data {

SplitIndices split_indices(int64_t n, double val_fraction, double test_fraction, uint64_t seed,
                           const at::Tensor& strata) {
  LATHE_CHECK(val_fraction >= 0 && test_fraction >= 0 && val_fraction + test_fraction < 1,
              DataError,
              "split fractions val {} + test {} must be non-negative and sum to less "
              "than 1 (the rest is train)",
              val_fraction, test_fraction);
  LATHE_CHECK(!strata.defined() || (strata.dim() == 1 && strata.size(0) == n), DataError,
              "split strata must be (N={}) class ids, got shape {}", n,
              strata.defined() ? strata.sizes() : c10::IntArrayRef{});
  auto gen = at::make_generator<at::CPUGeneratorImpl>(derive_seed(seed, /*stream=*/1));
  const at::Tensor perm = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));  // (N)
  const auto* p = perm.data_ptr<int64_t>();

  // Groups of record indices in shuffled order: one per class, or one for all.
  std::map<int64_t, std::vector<int64_t>> groups;
  const at::Tensor labels = strata.defined() ? strata.to(at::kLong).contiguous() : at::Tensor();
  for (int64_t i = 0; i < n; ++i)
    groups[labels.defined() ? labels.data_ptr<int64_t>()[p[i]] : 0].push_back(p[i]);

  SplitIndices out;
  for (const auto& [label, idx] : groups) {
    const auto size = static_cast<double>(idx.size());
    const auto n_test = static_cast<size_t>(std::llround(test_fraction * size));
    const auto n_val =
        std::min(idx.size() - n_test, static_cast<size_t>(std::llround(val_fraction * size)));
    out.test.insert(out.test.end(), idx.begin(), idx.begin() + static_cast<long>(n_test));
    out.val.insert(out.val.end(), idx.begin() + static_cast<long>(n_test),
                   idx.begin() + static_cast<long>(n_test + n_val));
    out.train.insert(out.train.end(), idx.begin() + static_cast<long>(n_test + n_val), idx.end());
  }
  for (auto* part : {&out.train, &out.val, &out.test}) std::sort(part->begin(), part->end());
  return out;
}

}  // namespace lathe::data
