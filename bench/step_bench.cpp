// step_bench: the optimizer-side work of one training step, before and after issue 22 — gradient
// clipping (LibTorch's clip_grad_norm_, per-tensor norms and a .item(), against lathe's foreach
// clip_grad_norm that keeps the factor on the device) and fp16's scaler step (unscale, read the
// inf flag on the host, step; against the scaler's default for the device, and the hand-off of
// scale and flag to the fused AdamW kernel that CUDA uses) — on a
// ResNet-18's parameters (62 tensors, 11.7M values). Prints milliseconds per call and ratios.
//
//   build/release/bench/step_bench [--device cpu|cuda] [--repeats 30]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include "lathe/core/gpu.h"
#include "lathe/optim/clip.h"
#include "lathe/optim/fused_adamw.h"
#include "lathe/train/amp.h"
#include "models/registry.h"

namespace {

/// Median milliseconds of `fn` over `repeats` calls (after two warm-up calls).
template <class Fn>
double median_ms(int repeats, c10::Device device, Fn&& fn) {
  std::vector<double> ms;
  for (int i = 0; i < repeats + 2; ++i) {
    lathe::synchronize(device);
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    lathe::synchronize(device);
    const double t =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= 2) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string device_name = "cpu";
  int repeats = 30;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--device") device_name = argv[i + 1];
    if (flag == "--repeats") repeats = std::stoi(argv[i + 1]);
  }
  const c10::Device device(device_name);
  auto model = lathe::models::build_model(
      lathe::config::parse_model_section("resnet18", {"num_classes=10"}));
  model.ptr()->to(device);
  std::vector<at::Tensor> params = model.ptr()->parameters();
  const auto fill_grads = [&](double scale) {
    for (auto& p : params) p.mutable_grad() = at::randn_like(p) * scale;
  };

  // Clipping: the norm of every gradient, the total, the factor, the scaling.
  fill_grads(1.0);
  const double libtorch_clip = median_ms(repeats, device, [&] {
    torch::nn::utils::clip_grad_norm_(params, 1.0);
  });
  const double lathe_clip = median_ms(repeats, device, [&] {
    lathe::optim::clip_grad_norm(params, 1.0);
  });

  // fp16's scaler step with the fused AdamW: before, unscale the gradients, read the inf flag
  // on the host, step; after, look for inf/NaN (x1) and hand scale and flag to the kernel.
  lathe::optim::FusedAdamW opt(params, torch::optim::AdamWOptions(1e-4));
  const auto options = at::TensorOptions().device(device);
  // A scale of 1 leaves the gradients as they are, so every call does the same work.
  const at::Tensor inv_scale = at::ones({}, options);
  fill_grads(1.0);
  const double host_read = median_ms(repeats, device, [&] {
    at::Tensor found_inf = at::zeros({}, options);
    std::vector<at::Tensor> grads;
    for (auto& p : params) grads.push_back(p.grad());
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale);
    if (found_inf.item<float>() == 0.0f) opt.step();
  });
  const auto scaler_ms = [&](bool device_skip) {
    lathe::train::GradScaler scaler(true, /*init_scale=*/1.0, 2.0, 0.5, 1 << 30);
    scaler.set_device_skip(device_skip);
    (void)scaler.scale(at::ones({}, options));  // makes the scaler's scale tensor
    return median_ms(repeats, device, [&] {
      scaler.step(opt);
      scaler.update();
    });
  };
  const double handoff = scaler_ms(true);
  const double chosen = scaler_ms(device.is_cuda());  // the default for this device

  std::printf("step_bench on %s, ResNet-18 parameters (%zu tensors), median of %d calls\n",
              device.str().c_str(), params.size(), repeats);
  std::printf("%-44s %10s %10s %8s\n", "", "before ms", "after ms", "after/before");
  std::printf("%-44s %10.3f %10.3f %8.2f\n", "clip_grad_norm (max_norm 1)", libtorch_clip,
              lathe_clip, lathe_clip / libtorch_clip);
  std::printf("%-44s %10.3f %10.3f %8.2f\n", "fp16 scaler step + fused AdamW (default)",
              host_read, chosen, chosen / host_read);
  std::printf("%-44s %10.3f %10.3f %8.2f\n", "  the device-side hand-off (CUDA's default)",
              host_read, handoff, handoff / host_read);
  return 0;
}
