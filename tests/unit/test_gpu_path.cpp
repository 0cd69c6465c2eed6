// The GPU path's logic where the CPU can check it: precision auto, DeviceFeed, the CUDA-graph
// fallback and its refusals, activation checkpointing under autocast, optimizer state placement,
// clipping and fp16 scaling without host syncs (capturable FusedAdamW: test_train.cpp).
#include <cstdlib>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include "lathe/ckpt/checkpoint.h"
#include "lathe/config/config.h"
#include "lathe/core/autocast.h"
#include "lathe/core/error.h"
#include "lathe/core/gpu.h"
#include "lathe/core/runtime.h"
#include "lathe/data/device_feed.h"
#include "lathe/optim/clip.h"
#include "lathe/optim/fused_adamw.h"
#include "lathe/optim/optimizer.h"
#include "lathe/train/cuda_graph.h"
#include "lathe/train/trainer.h"
#include "models/checkpoint.h"
#include "models/transformer/gpt2.h"
#include "tests/support.h"

namespace config = lathe::config;
namespace train = lathe::train;
using lathe::testing::expect_error;

TEST(GpuPath, PrecisionAutoIsFloat32OnTheCpuAndTheDefault) {
  EXPECT_EQ(config::TrainerSection().precision, "auto");
  EXPECT_EQ(lathe::resolve_precision("auto", c10::kCPU), "32");
  EXPECT_EQ(lathe::resolve_precision("bf16", c10::kCPU), "bf16");
  EXPECT_EQ(lathe::resolve_precision("fp16", c10::Device("cuda:0")), "fp16");
  EXPECT_FALSE(lathe::bf16_native(c10::kCPU));
  EXPECT_EQ(lathe::peak_memory_bytes(c10::kCPU), 0);
  const auto cfg =
      config::parse_config("data: {path: x}\nmodel: {name: mlp}\n", "<t>",
                           {"trainer.cuda_graphs=true", "trainer.channels_last=false"});
  EXPECT_TRUE(cfg.trainer.cuda_graphs);
  EXPECT_EQ(cfg.trainer.channels_last, "false");
  EXPECT_EQ(config::parse_config(config::to_yaml(cfg), "<back>").trainer.cuda_graphs, true);
  EXPECT_THROW(config::parse_config("data: {path: x}\nmodel: {name: mlp}\n", "<t>",
                                    {"trainer.precision=fp8"}),
               lathe::ConfigError);
}

TEST(GpuPath, DeviceFeedHandsOutTheSourcesBatchesInOrderFromAnyStart) {
  const lathe::data::TensorDataset data{at::arange(40, at::kFloat).view({20, 2}), at::arange(20)};
  lathe::data::TensorLoader loader(data, 6, /*shuffle=*/true, 3);
  loader.set_epoch(1);
  lathe::data::DeviceFeed feed(loader, c10::kCPU, /*first=*/1);
  for (int64_t i = 1; i < loader.num_batches(); ++i) {
    EXPECT_EQ(feed.position(), i);
    const auto got = feed.next();
    const auto want = loader.batch(i);
    EXPECT_TRUE(got.inputs.equal(want.inputs)) << i;
    EXPECT_TRUE(got.targets.equal(want.targets)) << i;
  }
  EXPECT_THROW(feed.next(), lathe::DataError);
  // channels_last applies to 4-d inputs.
  const lathe::data::TensorDataset images{at::randn({4, 3, 5, 5}), at::zeros({4}, at::kLong)};
  lathe::data::TensorLoader image_loader(images, 2, false, 0);
  lathe::data::DeviceFeed cl(image_loader, c10::kCPU, 0, /*channels_last=*/true);
  EXPECT_TRUE(cl.next().inputs.is_contiguous(at::MemoryFormat::ChannelsLast));
}

TEST(GpuPath, CudaGraphsOnTheCpuFallBackToTheSameEagerTraining) {
  EXPECT_FALSE(train::CudaGraphStep::unsupported_reason(c10::kCPU).empty());
  const lathe::data::TensorDataset data{at::randn({48, 3}), at::randn({48})};
  const auto run = [&](bool graphs, const std::string& precision) {
    lathe::seed_everything(3);
    torch::nn::Linear net(3, 1);
    config::TrainerSection t;
    t.max_epochs = 2;
    t.progress = "none";
    t.cuda_graphs = graphs;
    t.precision = precision;
    config::OptimSection o;
    o.fused = "true";
    auto opt = lathe::optim::make_optimizer(o, *net);
    config::TaskSection task;
    task.kind = "regression";
    train::Trainer trainer(t, c10::kCPU, torch::nn::AnyModule(net), train::Task(task), opt,
                           train::make_schedules(o, 100, 10));
    EXPECT_EQ(trainer.config().precision, "32");  // auto on the CPU
    lathe::data::TensorLoader loader(data, 16, true, 0);
    trainer.fit(loader, nullptr);
    return net->weight.clone();
  };
  const at::Tensor eager = run(false, "32");
  EXPECT_TRUE(run(true, "auto").equal(eager));  // bit for bit: the same eager path
}

TEST(GpuPath, CheckpointedGpt2BlocksGiveTheSameGradients) {
  // With dropout on: the recomputation replays the forward's random masks.
  const auto grads = [](bool checkpointing) {
    lathe::seed_everything(11);
    lathe::models::GPT2 lm(lathe::models::GPT2Options()
                               .vocab_size(50)
                               .n_positions(16)
                               .n_embd(32)
                               .n_layer(3)
                               .n_head(4)
                               .dropout(0.2)
                               .gradient_checkpointing(checkpointing));
    lm->train();
    lathe::seed_everything(12);
    const at::Tensor ids = at::randint(50, {2, 16}, at::kLong);
    lm->forward(ids).logsumexp(-1).mean().backward();
    std::vector<at::Tensor> g;
    for (const auto& p : lm->parameters()) g.push_back(p.grad().clone());
    return g;
  };
  const auto plain = grads(false), recomputed = grads(true);
  ASSERT_EQ(plain.size(), recomputed.size());
  for (size_t i = 0; i < plain.size(); ++i)
    EXPECT_LE((plain[i] - recomputed[i]).abs().max().item<double>(), 1e-6) << i;
  // Without gradients it is the function itself.
  torch::NoGradGuard no_grad;
  const at::Tensor x = at::randn({3});
  EXPECT_TRUE(
      lathe::models::checkpointed([](const at::Tensor& t) { return t * 2; }, x).equal(x * 2));
}

// ---- defects of the GPU path found by reading, shown on the CPU (issue 22) ----------------------

namespace {

/// A tiny GPT-2 without dropout: what differs between runs is only what the test changes.
lathe::models::GPT2 tiny_gpt2(bool checkpointing) {
  return lathe::models::GPT2(lathe::models::GPT2Options()
                                 .vocab_size(50)
                                 .n_positions(16)
                                 .n_embd(32)
                                 .n_layer(2)
                                 .n_head(4)
                                 .dropout(0.0)
                                 .gradient_checkpointing(checkpointing));
}

/// The Trainer's step order: forward under autocast, backward after the region, optimizer step.
std::vector<double> bf16_losses(lathe::models::GPT2 lm, int steps) {
  lm->train();
  torch::optim::AdamW opt(lm->parameters(), torch::optim::AdamWOptions(3e-2));
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    lathe::seed_everything(100 + s);
    const at::Tensor ids = at::randint(50, {2, 16}, at::kLong);
    at::Tensor loss;
    {
      lathe::AutocastGuard amp(c10::DeviceType::CPU, at::kBFloat16, true);
      loss = lm->forward(ids).to(at::kFloat).logsumexp(-1).mean();
    }
    loss.backward();  // outside the region, as the Trainer does: the recompute runs here
    opt.step();
    opt.zero_grad(/*set_to_none=*/true);
    losses.push_back(loss.item<double>());
  }
  return losses;
}

/// conv → relu → linear: 4-d weights, so trainer.channels_last applies.
struct TinyCnnImpl : torch::nn::Module {
  TinyCnnImpl()
      : conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 6, 3)))),
        fc(register_module("fc", torch::nn::Linear(6 * 6 * 6, 4))) {}
  at::Tensor forward(const at::Tensor& x) {  // (B, 3, 8, 8) → (B, 4)
    return fc->forward(conv->forward(x).relu().flatten(1));
  }
  torch::nn::Conv2d conv;
  torch::nn::Linear fc;
};
TORCH_MODULE(TinyCnn);

}  // namespace

TEST(GpuDefects, CheckpointedRecomputeUnderAutocastNeverLeavesStaleCastsBehind) {
  // Before the fix, backward's recompute cached bf16 copies of the weights in autocast's cache
  // and nothing cleared them: the next step's forward used the previous step's weights.
  lathe::seed_everything(7);
  auto plain = tiny_gpt2(false);
  lathe::seed_everything(7);
  auto recomputed = tiny_gpt2(true);
  const auto a = bf16_losses(plain, 4), b = bf16_losses(recomputed, 4);
  for (size_t s = 0; s < a.size(); ++s) EXPECT_NEAR(a[s], b[s], 1e-5) << "step " << s;
  const auto pa = plain->parameters(), pb = recomputed->parameters();
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_LE((pa[i] - pb[i]).abs().max().item<double>(), 1e-5) << "parameter " << i;
}

TEST(GpuDefects, ResumedFusedAdamWStateTakesItsParametersLayout) {
  // A checkpoint written by a run with contiguous weights (the CPU, where channels_last auto is
  // off) resumed by a channels-last run (a GPU): the restored moments must take the parameters'
  // memory format, or the fused kernel gets parameter and state laid out differently.
  lathe::testing::TempDir dir;
  const lathe::data::TensorDataset data{at::randn({24, 3, 8, 8}), at::randint(4, {24}, at::kLong)};
  struct Rig {
    TinyCnn net;
    lathe::optim::OptimizerBundle opt;
    std::unique_ptr<train::Trainer> trainer;
  };
  const auto make = [&](int64_t epochs, bool channels_last) {
    lathe::seed_everything(5);
    Rig r{TinyCnn(), {}, nullptr};
    config::TrainerSection t;
    t.max_epochs = epochs;
    t.progress = "none";
    t.channels_last = channels_last ? "true" : "false";
    config::OptimSection o;
    o.fused = "true";
    r.opt = lathe::optim::make_optimizer(o, *r.net);
    r.trainer = std::make_unique<train::Trainer>(t, c10::kCPU, torch::nn::AnyModule(r.net),
                                                 train::Task(), r.opt,
                                                 train::make_schedules(o, 100, 3));
    return r;
  };
  lathe::data::TensorLoader loader(data, 8, true, 1);
  Rig first = make(1, /*channels_last=*/false);
  first.trainer->fit(loader, nullptr);
  lathe::ckpt::save_checkpoint(*first.trainer, dir / "ck", "");
  Rig resumed = make(2, /*channels_last=*/true);
  lathe::ckpt::load_checkpoint(*resumed.trainer, dir / "ck");
  const at::Tensor conv = resumed.net->conv->weight;  // (6, 3, 3, 3) channels-last
  ASSERT_TRUE(conv.is_contiguous(at::MemoryFormat::ChannelsLast));
  auto& st = static_cast<torch::optim::AdamWParamState&>(
      *resumed.opt.optimizer->state().at(conv.unsafeGetTensorImpl()));
  EXPECT_EQ(st.exp_avg().strides(), conv.strides());
  EXPECT_EQ(st.exp_avg_sq().strides(), conv.strides());
  resumed.trainer->fit(loader, nullptr);
  // The same training as without the interruption (layouts change rounding only).
  Rig whole = make(2, /*channels_last=*/false);
  whole.trainer->fit(loader, nullptr);
  const auto want = whole.net->parameters(), got = resumed.net->parameters();
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_LE((got[i] - want[i]).abs().max().item<double>(), 1e-5) << "parameter " << i;
}

TEST(GpuDefects, CudaGraphRefusalReasons) {
  const c10::Device cuda("cuda:0");
  train::GraphStepTraits ok;
  const auto why = [&](auto change) {
    train::GraphStepTraits t = ok;
    change(t);
    return train::cuda_graph_blocker(t, cuda);
  };
  EXPECT_NE(why([](auto& t) { t.recomputes = true; }).find("gradient_checkpointing"),
            std::string::npos);
  EXPECT_NE(why([](auto& t) { t.callback = "model.unfreeze_at_epoch ..."; })
                .find("unfreeze_at_epoch"),
            std::string::npos);
  EXPECT_NE(why([](auto& t) { t.distributed = true; }).find("distributed"), std::string::npos);
  EXPECT_NE(why([](auto& t) { t.fp16_scaler = true; }).find("fp16"), std::string::npos);
  EXPECT_NE(why([](auto& t) { t.fused_adamw = false; }).find("fused adamw"), std::string::npos);
  EXPECT_NE(why([](auto& t) { t.accumulate_grad_batches = 2; }).find("accumulate"),
            std::string::npos);
  // With every step reason absent, only the device's remains.
  EXPECT_FALSE(train::cuda_graph_blocker(ok, c10::kCPU).empty());

  // The Trainer gathers them: an unfreezing callback, and a step that recomputed activations.
  const auto trainer_reason = [](bool checkpointing, bool unfreeze) {
    lathe::seed_everything(1);
    auto lm = tiny_gpt2(checkpointing);
    config::TrainerSection t;
    t.max_epochs = 1;
    t.progress = "none";
    config::OptimSection o;
    o.fused = "true";
    auto opt = lathe::optim::make_optimizer(o, *lm);
    config::TaskSection task;
    task.kind = "lm";
    train::Trainer trainer(t, c10::kCPU, torch::nn::AnyModule(lm), train::Task(task), opt,
                           train::make_schedules(o, 100, 10));
    if (unfreeze)
      trainer.add_callback(std::make_shared<train::UnfreezeCallback>(2, std::vector<std::string>{"*"}));
    const lathe::data::TensorDataset d{at::randint(50, {4, 16}, at::kLong),
                                       at::randint(50, {4, 16}, at::kLong)};
    lathe::data::TensorLoader loader(d, 2, false, 0);
    trainer.fit(loader, nullptr);
    return trainer.cuda_graph_blocker();
  };
  EXPECT_NE(trainer_reason(true, false).find("gradient_checkpointing"), std::string::npos);
  EXPECT_NE(trainer_reason(false, true).find("unfreeze_at_epoch"), std::string::npos);
  EXPECT_EQ(trainer_reason(false, false).find("gradient_checkpointing"), std::string::npos);

  // task.class_weights: one tensor, made once and reused by every step (no copy per step).
  config::TaskSection weighted;
  weighted.kind = "classification";
  weighted.class_weights = {1.0, 2.0, 0.5};
  const train::Task task(weighted);
  const at::Tensor logits = at::randn({4, 3}), labels = at::tensor({0, 1, 2, 1}, at::kLong);
  (void)task.loss(logits, labels);
  const void* first = task.class_weights_on(c10::kCPU).data_ptr();
  (void)task.loss(logits, labels);
  EXPECT_EQ(task.class_weights_on(c10::kCPU).data_ptr(), first);
  EXPECT_NEAR(task.loss(logits, labels).item<double>(),
              at::cross_entropy_loss(logits, labels, at::tensor({1.0f, 2.0f, 0.5f}))
                  .item<double>(),
              1e-7);
}

TEST(GpuDefects, ClippingOnTheDeviceMatchesTorchs) {
  const auto grads_of = [](uint64_t seed) {
    lathe::seed_everything(seed);
    std::vector<at::Tensor> ps{at::randn({5, 4}).requires_grad_(), at::randn({7}).requires_grad_(),
                               at::randn({3, 3}).requires_grad_()};
    for (auto& p : ps) p.mutable_grad() = at::randn(p.sizes()) * 3;
    ps[2].mutable_grad() = at::Tensor();  // a parameter without a gradient
    return ps;
  };
  for (double max_norm : {0.5, 1e3}) {  // clipped, and untouched (factor clamped to 1)
    auto ours = grads_of(3), theirs = grads_of(3);
    const at::Tensor norm = lathe::optim::clip_grad_norm(ours, max_norm);
    const double want = torch::nn::utils::clip_grad_norm_(theirs, max_norm);
    EXPECT_NEAR(norm.item<double>(), want, 1e-5);
    EXPECT_TRUE(norm.is_cpu() && norm.dim() == 0);
    for (size_t i = 0; i < 2; ++i)
      EXPECT_LE((ours[i].grad() - theirs[i].grad()).abs().max().item<double>(), 1e-6);
  }
  auto ours = grads_of(4), theirs = grads_of(4);
  lathe::optim::clip_grad_value(ours, 0.7);
  torch::nn::utils::clip_grad_value_(theirs, 0.7);
  for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(ours[i].grad().equal(theirs[i].grad()));
}

TEST(GpuDefects, Fp16ScalerWithFusedAdamWSkipsOnTheDeviceLikeTheHostPath) {
  // Fused: the kernel unscales and skips an inf step with no .item(); unfused: the scaler reads
  // the flag on the host. Same weights and the same step counts after a skipped step.
  const auto run = [](bool fused) {
    lathe::seed_everything(9);
    torch::nn::Linear net(3, 2);
    config::OptimSection o;
    o.fused = fused ? "true" : "false";
    auto opt = lathe::optim::make_optimizer(o, *net);
    EXPECT_EQ(dynamic_cast<lathe::optim::FusedAdamW*>(opt.optimizer.get()) != nullptr, fused);
    train::GradScaler scaler(true, 1024.0, 2.0, 0.5, 2);
    scaler.set_device_skip(true);  // what CUDA does; the CPU's default reads the flag
    for (int s = 0; s < 5; ++s) {
      scaler.scale(net->forward(at::ones({4, 3}) * (s + 1)).square().mean()).backward();
      if (s == 2) net->weight.mutable_grad()[0][0] = INFINITY;
      scaler.step(*opt);
      scaler.update();
      opt->zero_grad(true);
    }
    EXPECT_EQ(scaler.skipped_steps(), 1);
    EXPECT_DOUBLE_EQ(scaler.state().scale, 2048.0);  // grown after 2 clean, halved, grown
    if (fused) static_cast<lathe::optim::FusedAdamW&>(*opt.optimizer).sync_host_steps();
    const auto& st = static_cast<torch::optim::AdamWParamState&>(
        *opt.optimizer->state().at(net->weight.unsafeGetTensorImpl()));
    EXPECT_EQ(st.step(), 4);  // five steps, one skipped
    return net->weight.clone();
  };
  EXPECT_LE((run(true) - run(false)).abs().max().item<double>(), 1e-6);
}

TEST(GpuDefects, FusedAdamWStateExistsBeforeARecordedStep) {
  torch::nn::Linear a(3, 2), b(2, 1);
  std::vector<at::Tensor> params = a->parameters();
  for (const auto& p : b->parameters()) params.push_back(p);
  lathe::optim::FusedAdamW opt(params, torch::optim::AdamWOptions(1e-2));
  opt.freeze_state(true);  // as around a recording: no state may be made now
  b->forward(a->forward(at::randn({4, 3}))).sum().backward();
  expect_error<lathe::TrainError>([&] { opt.step(); }, {"CUDA graph", "init_state()"});
  opt.freeze_state(false);
  opt.zero_grad(true);
  opt.init_state();  // before recording: every trainable parameter's state, zeroed
  EXPECT_EQ(opt.state().size(), params.size());
  opt.freeze_state(true);
  b->forward(a->forward(at::randn({4, 3}))).sum().backward();
  opt.step();  // finds what it needs
  for (const auto& p : params)
    EXPECT_EQ(static_cast<torch::optim::AdamWParamState&>(*opt.state().at(p.unsafeGetTensorImpl()))
                  .step(),
              1);
}

TEST(GpuDefects, DeterminismAndMatmulPrecisionSettings) {
  ::unsetenv("CUBLAS_WORKSPACE_CONFIG");
  lathe::set_deterministic(true);
  ASSERT_NE(std::getenv("CUBLAS_WORKSPACE_CONFIG"), nullptr);
  EXPECT_STREQ(std::getenv("CUBLAS_WORKSPACE_CONFIG"), ":4096:8");
  ::setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0", 1);
  expect_error<lathe::ConfigError>([] { lathe::set_deterministic(true); },
                                   {"CUBLAS_WORKSPACE_CONFIG=:0:0", ":4096:8"});
  ::unsetenv("CUBLAS_WORKSPACE_CONFIG");
  lathe::set_deterministic(false);
  EXPECT_EQ(std::getenv("CUBLAS_WORKSPACE_CONFIG"), nullptr);  // only determinism sets it
  const c10::Device cuda("cuda:0");
  EXPECT_EQ(lathe::resolve_matmul_precision("auto", "32", false, cuda), "high");
  EXPECT_EQ(lathe::resolve_matmul_precision("auto", "32", true, cuda), "highest");
  EXPECT_EQ(lathe::resolve_matmul_precision("auto", "bf16", false, cuda), "highest");
  EXPECT_EQ(lathe::resolve_matmul_precision("auto", "32", false, c10::kCPU), "highest");
  EXPECT_EQ(lathe::resolve_matmul_precision("medium", "32", true, c10::kCPU), "medium");
  EXPECT_THROW(config::parse_config("data: {path: x}\nmodel: {name: mlp}\n", "<t>",
                                    {"trainer.matmul_precision=low"}),
               lathe::ConfigError);
}
