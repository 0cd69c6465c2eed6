// MeterReduce: the collectives a metric meter needs to combine its state over data-parallel ranks.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

namespace lathe::dist {

/// The collectives a meter needs to combine its state over the ranks of a data-parallel run
/// (GradientSync::meter_reduce() makes one from a process group).
///
///   lathe::dist::MeterReduce r{[](at::Tensor& t) { /* all-reduce t */ }, ...};
///   meter.reduce(r);
struct MeterReduce {
  /// Sums a CPU tensor over ranks, in place.
  std::function<void(at::Tensor&)> sum;
  /// Every rank's rows (n_r, ...) in rank order as (Σ n_r, m), m the row size; a rank may pass
  /// (0, ...) rows of any trailing shape, the dtype must agree.
  std::function<at::Tensor(const at::Tensor&)> cat;
};

}  // namespace lathe::dist
