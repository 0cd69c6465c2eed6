// clip_grad_norm / clip_grad_value: gradients grouped by device and dtype, foreach kernels, the
// clipping factor computed and applied on the device.
#include "lathe/optim/clip.h"

#include <map>
#include <tuple>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

namespace lathe::optim {
namespace {

/// The defined gradients of `params`, grouped by (device type, device index, dtype).
std::map<std::tuple<int, int, int>, std::vector<at::Tensor>> grads_by_device(
    const std::vector<at::Tensor>& params) {
  std::map<std::tuple<int, int, int>, std::vector<at::Tensor>> out;
  for (const auto& p : params) {
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    out[{static_cast<int>(g.device().type()), g.device().index(),
         static_cast<int>(g.scalar_type())}]
        .push_back(g);
  }
  return out;
}

}  // namespace

at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  const auto groups = grads_by_device(params);
  if (groups.empty()) return {};
  const c10::Device first = groups.begin()->second.front().device();
  std::vector<at::Tensor> norms;  // one () per gradient, on the first device
  for (const auto& [key, grads] : groups)
    for (const at::Tensor& n : at::_foreach_norm(grads, 2)) norms.push_back(n.to(first));
  const at::Tensor total = at::linalg_vector_norm(at::stack(norms), 2);  // ()
  const at::Tensor factor = (max_norm / (total + 1e-6)).clamp_max(1.0);  // ()
  for (const auto& [key, grads] : groups)
    at::_foreach_mul_(grads, factor.to(grads.front().device()));
  return total;
}

void clip_grad_value(const std::vector<at::Tensor>& params, double clip_value) {
  torch::NoGradGuard no_grad;
  for (const auto& [key, grads] : grads_by_device(params)) {
    at::_foreach_clamp_min_(grads, -clip_value);
    at::_foreach_clamp_max_(grads, clip_value);
  }
}

}  // namespace lathe::optim
