// EstimatorModule: a fitted Estimator behind a module's forward, for evaluation and predict.
#include "models/estimator.h"

#include <ATen/ATen.h>

namespace lathe::models {

at::Tensor EstimatorModuleImpl::forward(const at::Tensor& x) {
  const at::Tensor rows = x.to(at::kFloat).cpu().reshape({x.size(0), -1});  // (B, F)
  return estimator->predict(rows).to(x.device());                             // (B, K) or (B, 1)
}

std::shared_ptr<Estimator> estimator_of(const torch::nn::Module& module) {
  if (const auto* m = dynamic_cast<const EstimatorModuleImpl*>(&module)) return m->estimator;
  return nullptr;
}

}  // namespace lathe::models
