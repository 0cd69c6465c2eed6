// GPU tests (ctest label gpu; scripts/gpu-check.sh): bf16 training, fused AdamW, CUDA graphs,
// SDPA kernels, side-stream prefetch and peak memory on a CUDA device. Each skips without one.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <string>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include "lathe/config/config.h"
#include "lathe/core/gpu.h"
#include "lathe/core/runtime.h"
#include "lathe/data/device_feed.h"
#include "lathe/dist/grad_sync.h"
#include "lathe/dist/process_group.h"
#include "lathe/optim/fused_adamw.h"
#include "lathe/optim/optimizer.h"
#include "lathe/train/cuda_graph.h"
#include "lathe/train/trainer.h"
#include "models/registry.h"
#include "models/transformer/attention.h"

namespace config = lathe::config;
namespace train = lathe::train;

#define LATHE_NEED_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

namespace {

const c10::Device kCuda("cuda:0");

/// Records every logged row of one kind.
struct Rows : train::Callback {
  std::string kind;
  std::vector<train::Metrics> rows;
  explicit Rows(std::string k) : kind(std::move(k)) {}
  std::string name() const override { return "rows"; }
  void on_log(train::Trainer&, const train::LogEvent& e) override {
    if (e.kind == kind) rows.push_back(e.values);
  }
};

/// An MLP classifier trained on CUDA; returns the epoch rows and the final weights.
struct MlpRun {
  std::vector<train::EpochRecord> history;
  std::vector<train::Metrics> epochs;
  std::vector<at::Tensor> weights;
  std::string precision;
  int64_t graph_replays = 0;  ///< steps that ran as replays of a recorded CUDA graph
};

MlpRun train_mlp(config::TrainerSection t, int64_t records = 512, int64_t batch = 64) {
  lathe::seed_everything(0);
  config::RunConfig cfg;
  cfg.task.kind = "classification";
  cfg.model =
      config::parse_model_section("mlp", {"in_features=16", "hidden=[64, 64]", "out_features=4"});
  auto model = lathe::models::build_model(cfg.model);
  model.ptr()->to(kCuda);
  t.progress = "none";
  auto opt = lathe::optim::make_optimizer(cfg.optim, *model.ptr());
  const at::Tensor x = at::randn({records, 16});
  const at::Tensor y = x.narrow(1, 0, 4).argmax(1);  // learnable classes
  lathe::data::TensorLoader loader({x, y}, batch, /*shuffle=*/true, 0);
  const int64_t steps = t.max_epochs * loader.num_batches();
  train::Trainer trainer(t, kCuda, model, train::Task(cfg.task), opt,
                         train::make_schedules(cfg.optim, steps, loader.num_batches()));
  auto rows = std::make_shared<Rows>("epoch");
  trainer.add_callback(rows);
  MlpRun r;
  r.precision = trainer.config().precision;
  r.history = trainer.fit(loader, nullptr);
  r.epochs = rows->rows;
  for (const auto& p : model.ptr()->parameters()) r.weights.push_back(p.detach().cpu());
  r.graph_replays = trainer.cuda_graph_replays();
  return r;
}

}  // namespace

TEST(Gpu, Bf16AutocastTrainingDecreasesLossAndReportsPeakMemory) {
  LATHE_NEED_CUDA();
  config::TrainerSection t;  // precision auto: bf16 on Ampere and later
  t.max_epochs = 10;
  const MlpRun r = train_mlp(t);
  if (lathe::bf16_native(kCuda)) {
    EXPECT_EQ(r.precision, "bf16");
  }
  EXPECT_LT(r.history.back().train.at("loss"), 0.8 * r.history.front().train.at("loss"));
  ASSERT_FALSE(r.epochs.empty());
  ASSERT_TRUE(r.epochs.back().count("gpu/peak_memory_gib"));
  EXPECT_GT(r.epochs.back().at("gpu/peak_memory_gib"), 0.0);
  EXPECT_GT(lathe::peak_memory_bytes(kCuda), 0);
}

TEST(Gpu, FusedAdamWOnCudaEqualsCpuAdamW) {
  LATHE_NEED_CUDA();
  lathe::seed_everything(5);
  const at::Tensor w0 = at::randn({64, 32}), b0 = at::randn({64});
  std::vector<at::Tensor> cpu = {w0.clone().requires_grad_(), b0.clone().requires_grad_()};
  std::vector<at::Tensor> gpu = {w0.to(kCuda).requires_grad_(), b0.to(kCuda).requires_grad_()};
  const auto opts = torch::optim::AdamWOptions(0.01).weight_decay(0.1);
  torch::optim::AdamW plain(cpu, opts);
  lathe::optim::FusedAdamW fused(gpu, opts);
  for (int step = 0; step < 20; ++step) {
    const at::Tensor x = at::randn({8, 32});
    cpu[0].mutable_grad() = cpu[1].mutable_grad() = at::Tensor();
    gpu[0].mutable_grad() = gpu[1].mutable_grad() = at::Tensor();
    (x.matmul(cpu[0].t()) + cpu[1]).tanh().sum().backward();
    (x.to(kCuda).matmul(gpu[0].t()) + gpu[1]).tanh().sum().backward();
    plain.step();
    fused.step();
  }
  EXPECT_LE((cpu[0] - gpu[0].cpu()).abs().max().item<double>(), 1e-4);
  EXPECT_LE((cpu[1] - gpu[1].cpu()).abs().max().item<double>(), 1e-4);
  // optim.fused auto picks it for CUDA parameters.
  torch::nn::Linear net(4, 2);
  net->to(kCuda);
  EXPECT_NE(dynamic_cast<lathe::optim::FusedAdamW*>(
                lathe::optim::make_optimizer(config::OptimSection(), *net).optimizer.get()),
            nullptr);
}

TEST(Gpu, CudaGraphStepEqualsTheEagerStep) {
  LATHE_NEED_CUDA();
  at::globalContext().setAllowTF32CuBLAS(false);
  config::TrainerSection t;
  t.max_epochs = 3;
  t.precision = "32";
  const MlpRun eager = train_mlp(t, 512, 64);
  t.cuda_graphs = true;
  const MlpRun graphed = train_mlp(t, 512 + 32, 64);  // a last batch of 32: the eager fallback
  const MlpRun graphed_even = train_mlp(t, 512, 64);
  for (size_t i = 0; i < eager.weights.size(); ++i)
    EXPECT_LE((eager.weights[i] - graphed_even.weights[i]).abs().max().item<double>(), 1e-5) << i;
  EXPECT_TRUE(std::isfinite(graphed.history.back().train.at("loss")));
  EXPECT_EQ(graphed.history.back().step, 3 * 9);
  // The graph ran: 3 warm-up steps, 1 recording, and every later full batch a replay (the
  // epochs' last batches of 32 run eagerly) — not an eager run that happens to agree.
  EXPECT_EQ(eager.graph_replays, 0);
  EXPECT_EQ(graphed_even.graph_replays, 3 * 8 - 4);
  EXPECT_EQ(graphed.graph_replays, 3 * 8 - 4);

  // The step itself: replays equal eager calls, and other shapes fall back.
  train::CudaGraphStep step(/*warmup_steps=*/1);
  at::Tensor acc = at::zeros({4}, kCuda);
  const auto fn = [&](const at::Tensor& x, const at::Tensor& y) {
    acc.add_(x.sum(0) * y.sum());
    return std::make_pair(x * 2, acc.sum());
  };
  const at::Tensor x = at::ones({3, 4}, kCuda), y = at::ones({2}, kCuda);
  EXPECT_EQ(step.run(x, y, fn).mode, train::GraphMode::Eager);
  EXPECT_EQ(step.run(x, y, fn).mode, train::GraphMode::Captured);
  const auto r = step.run(x * 3, y, fn);
  EXPECT_EQ(r.mode, train::GraphMode::Replayed);
  EXPECT_TRUE(r.output.cpu().equal(at::full({3, 4}, 6.0)));
  // warm-up 3·2, the recording's replay 3·2, then the replay of x·3: 9·2
  EXPECT_EQ(acc.cpu()[0].item<float>(), 6 + 6 + 18);
  EXPECT_EQ(step.run(at::ones({5, 4}, kCuda), y, fn).mode, train::GraphMode::Eager);
  EXPECT_EQ(step.fallbacks(), 1);
}

TEST(Gpu, SdpaFlashPathEqualsTheMathPath) {
  LATHE_NEED_CUDA();
  if (!lathe::bf16_native(kCuda)) GTEST_SKIP() << "flash attention needs sm_80 or later";
  lathe::seed_everything(2);
  const auto o = at::TensorOptions().device(kCuda).dtype(at::kBFloat16);
  const at::Tensor q = at::randn({2, 256, 128}, o), k = at::randn({2, 256, 128}, o),
                   v = at::randn({2, 256, 128}, o);
  auto& ctx = at::globalContext();
  const auto with = [&](bool flash, bool math) {
    ctx.setSDPUseFlash(flash);
    ctx.setSDPUseMemEfficient(false);
    ctx.setSDPUseCuDNN(false);
    ctx.setSDPUseMath(math);
    return lathe::models::attend(q, k, v, /*heads=*/2, {}, /*causal=*/true, 0.0, false)
        .to(at::kFloat);
  };
  const at::Tensor flash = with(true, false);  // throws if flash cannot run this call
  const at::Tensor math = with(false, true);
  ctx.setSDPUseFlash(true);
  ctx.setSDPUseMemEfficient(true);
  ctx.setSDPUseCuDNN(true);
  EXPECT_LE((flash - math).abs().max().item<double>(), 3e-2);  // bf16 rounding
  EXPECT_LE((flash - math).abs().mean().item<double>(), 2e-3);
}

TEST(Gpu, DeviceFeedCopiesAheadAndGivesTheSameBatches) {
  LATHE_NEED_CUDA();
  const lathe::data::TensorDataset data{at::randn({100, 3, 8, 8}), at::randint(10, {100})};
  lathe::data::TensorLoader loader(data, 16, /*shuffle=*/true, 1);
  loader.set_epoch(0);
  lathe::data::DeviceFeed feed(loader, kCuda, 0, /*channels_last=*/true);
  for (int64_t i = 0; i < loader.num_batches(); ++i) {
    const auto b = feed.next();
    EXPECT_TRUE(b.inputs.is_cuda());
    EXPECT_TRUE(b.inputs.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(b.inputs.cpu().equal(loader.batch(i).inputs)) << i;
    EXPECT_TRUE(b.targets.cpu().equal(loader.batch(i).targets)) << i;
  }
}

TEST(Gpu, CheckpointedGpt2TrainsInBf16WithLessMemory) {
  LATHE_NEED_CUDA();
  const auto peak = [](bool checkpointing) {
    lathe::seed_everything(4);
    auto model = lathe::models::build_model(config::parse_model_section(
        "gpt2", {"vocab_size=256", "n_positions=512", "n_embd=256", "n_layer=6", "n_head=4",
                 std::string("gradient_checkpointing=") + (checkpointing ? "true" : "false")}));
    model.ptr()->to(kCuda);
    model.ptr()->train();
    const at::Tensor ids = at::randint(256, {8, 512}, at::TensorOptions(kCuda).dtype(at::kLong));
    lathe::synchronize(kCuda);
    lathe::reset_peak_memory(kCuda);
    {
      train::AutocastGuard amp(c10::DeviceType::CUDA, at::kBFloat16, true);
      model.forward<at::Tensor>(ids).to(at::kFloat).logsumexp(-1).mean().backward();
    }
    lathe::synchronize(kCuda);
    at::Tensor g = model.ptr()->parameters().front().grad().cpu();
    return std::make_pair(lathe::peak_memory_bytes(kCuda), g);
  };
  const auto [plain_peak, plain_grad] = peak(false);
  const auto [ckpt_peak, ckpt_grad] = peak(true);
  EXPECT_LT(ckpt_peak, plain_peak);
  EXPECT_LE((plain_grad - ckpt_grad).abs().max().item<double>(), 1e-3);
}

// ---- NCCL (issue 8's CUDA check) ------------------------------------------------------------

TEST(Nccl, InitialisesAndOneGpuTrainsThroughGradientSync) {
  LATHE_NEED_CUDA();
  // A world of one rank on cuda:0 with the NCCL backend: the store, the communicator, an
  // all-reduce, and training steps whose gradients pass through GradientSync's buckets.
  ::setenv("RANK", "0", 1);
  ::setenv("WORLD_SIZE", "1", 1);
  ::setenv("LOCAL_RANK", "0", 1);
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", std::to_string(29500 + ::getpid() % 1000).c_str(), 1);
  const c10::Device cuda(c10::kCUDA, 0);
  auto group = lathe::dist::ProcessGroup::from_env(cuda, std::chrono::seconds(60), "nccl");
  EXPECT_EQ(group->backend(), "nccl");
  at::Tensor t = at::full({4}, 2.0, at::TensorOptions().device(cuda));
  group->all_reduce(t);
  EXPECT_TRUE(t.cpu().equal(at::full({4}, 2.0)));

  lathe::seed_everything(0);
  torch::nn::Linear net(8, 1);
  net->to(cuda);
  lathe::dist::broadcast_module(*group, *net);
  lathe::dist::GradientSync sync(group, *net, /*bucket_mb=*/25);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(0.05));
  const at::Tensor x = at::randn({64, 8}, at::TensorOptions().device(cuda));
  const at::Tensor y = x.sum(1, /*keepdim=*/true);
  double first = 0, last = 0;
  for (int step = 0; step < 50; ++step) {
    opt.zero_grad();
    sync.before_backward(/*sync=*/true);
    const at::Tensor loss = (net->forward(x) - y).square().mean();
    loss.backward();
    sync.before_step();
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, 0.5 * first) << "first loss " << first << ", last " << last;
  for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(v);
}
