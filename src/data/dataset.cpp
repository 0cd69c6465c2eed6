// Dataset adapters (tensors, subsets), transform composition and materialisation.
#include "lathe/data/dataset.h"

#include <ATen/ops/stack.h>

#include "lathe/core/error.h"

namespace lathe::data {

Transform compose(std::vector<Transform> steps) {
  return [steps = std::move(steps)](at::Tensor x, Rng& rng) {
    for (const auto& step : steps) x = step(std::move(x), rng);
    return x;
  };
}

double uniform(Rng& rng, double lo, double hi) {
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;  // [0, 1) with 53 random bits
  return lo + (hi - lo) * u;
}

TensorSource::TensorSource(TensorDataset data) : data_(std::move(data)) {
  LATHE_CHECK(data_.inputs.defined() && data_.targets.defined() &&
                  data_.inputs.size(0) == data_.targets.size(0),
              DataError,
              "TensorSource: inputs ({}) and targets ({}) must have the same number "
              "of records",
              data_.inputs.defined() ? data_.inputs.size(0) : 0,
              data_.targets.defined() ? data_.targets.size(0) : 0);
}

Example TensorSource::get(int64_t index) const {
  LATHE_CHECK(index >= 0 && index < size(), DataError, "record {} out of range [0, {})", index,
              size());
  return {data_.inputs[index], data_.targets[index]};
}

SubsetSource::SubsetSource(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices)
    : base_(std::move(base)), indices_(std::move(indices)) {
  for (int64_t i : indices_)
    LATHE_CHECK(i >= 0 && i < base_->size(), DataError,
                "subset index {} out of range [0, {}) of its dataset", i, base_->size());
}

Example SubsetSource::get(int64_t index) const {
  LATHE_CHECK(index >= 0 && index < size(), DataError, "record {} out of range [0, {})", index,
              size());
  return base_->get(indices_[static_cast<size_t>(index)]);
}

std::string SubsetSource::origin(int64_t index) const {
  if (index < 0 || index >= size()) return {};
  return base_->origin(indices_[static_cast<size_t>(index)]);
}

TensorDataset materialize(const Dataset& data) {
  LATHE_CHECK(data.size() > 0, DataError, "cannot materialise an empty dataset");
  std::vector<at::Tensor> inputs, targets;
  inputs.reserve(static_cast<size_t>(data.size()));
  targets.reserve(static_cast<size_t>(data.size()));
  for (int64_t i = 0; i < data.size(); ++i) {
    Example ex = data.get(i);
    inputs.push_back(std::move(ex.input));
    targets.push_back(std::move(ex.target));
  }
  return {at::stack(inputs), at::stack(targets)};  // (N, ...), (N, ...)
}

}  // namespace lathe::data
