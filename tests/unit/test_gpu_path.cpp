// The GPU path's logic where the CPU can check it: precision auto, DeviceFeed, the CUDA-graph
// fallback, activation checkpointing, the new config keys (capturable FusedAdamW: test_train.cpp).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/core/gpu.h"
#include "lathe/core/runtime.h"
#include "lathe/data/device_feed.h"
#include "lathe/optim/fused_adamw.h"
#include "lathe/optim/optimizer.h"
#include "lathe/train/cuda_graph.h"
#include "lathe/train/trainer.h"
#include "models/checkpoint.h"
#include "models/transformer/gpt2.h"

namespace config = lathe::config;
namespace train = lathe::train;

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
