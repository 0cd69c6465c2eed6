// dist_bench: data-parallel scaling on this machine's CPU — steps/s of one MLP training step with
// the same global batch in 1 process (1 and N threads) and in N processes of 1 thread each
// (Gloo all-reduce through lathe's GradientSync). Prints the ratios.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include "lathe/core/runtime.h"
#include "lathe/dist/grad_sync.h"
#include "lathe/dist/launch.h"
#include "lathe/dist/process_group.h"

namespace {

constexpr int64_t kGlobalBatch = 512, kWarmup = 5, kSteps = 40;

/// One rank: a 784-1024-1024-10 MLP (1.9 M parameters, 7.5 MB of gradients), SGD, its share of
/// the global batch; rank 0 writes steps/s to LATHE_BENCH_OUT.
int worker() {
  const auto world = lathe::dist::world_from_env();
  at::set_num_threads(std::atoi(std::getenv("LATHE_BENCH_THREADS")));
  lathe::seed_everything(0);
  torch::nn::Sequential net(torch::nn::Linear(784, 1024), torch::nn::ReLU(),
                            torch::nn::Linear(1024, 1024), torch::nn::ReLU(),
                            torch::nn::Linear(1024, 10));
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  const int64_t b = kGlobalBatch / world.size;
  const at::Tensor x = at::randn({b, 784}), y = at::randint(10, {b}, at::kLong);
  std::shared_ptr<lathe::dist::GradientSync> sync;
  if (world.active()) {
    auto group = lathe::dist::ProcessGroup::from_env(c10::kCPU, std::chrono::seconds(60));
    lathe::dist::broadcast_module(*group, *net);
    sync = std::make_shared<lathe::dist::GradientSync>(group, *net, 25.0);
  }
  const auto step = [&] {
    opt.zero_grad();
    if (sync) sync->before_backward(true);
    at::cross_entropy_loss(net->forward(x), y).backward();
    if (sync) sync->before_step();
    opt.step();
  };
  for (int64_t i = 0; i < kWarmup; ++i) step();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < kSteps; ++i) step();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (world.is_main()) std::ofstream(std::getenv("LATHE_BENCH_OUT")) << kSteps / s << "\n";
  return 0;
}

double measure(int processes, int threads) {
  const std::string out = "/tmp/lathe_dist_bench_" + std::to_string(::getpid());
  ::setenv("LATHE_BENCH_OUT", out.c_str(), 1);
  ::setenv("LATHE_BENCH_THREADS", std::to_string(threads).c_str(), 1);
  ::setenv("LATHE_BENCH_WORKER", "1", 1);
  if (lathe::dist::launch_local({"dist_bench"}, {.processes = processes}) != 0) return 0;
  double steps_per_s = 0;
  std::ifstream(out) >> steps_per_s;
  std::remove(out.c_str());
  std::printf("%d process(es) x %d thread(s): %6.2f steps/s (global batch %lld)\n", processes,
              threads, steps_per_s, static_cast<long long>(kGlobalBatch));
  return steps_per_s;
}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("LATHE_BENCH_WORKER") != nullptr) return worker();
  const int n = argc > 1 ? std::atoi(argv[1]) : 2;
  const double one = measure(1, 1), one_all = measure(1, n), many = measure(n, 1);
  if (one <= 0 || many <= 0) return 1;
  std::printf(
      "scaling 1 -> %d processes (1 thread each): %.2fx; vs 1 process x %d threads: %.2fx\n", n,
      many / one, n, many / one_all);
  return 0;
}
