// train (with optim and sched): schedules against PyTorch, exact epoch metrics, a short CNN run
// whose loss falls, NaN detection, and a whole run from config to files.
#include <cmath>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/core/runtime.h"
#include "lathe/data/idx.h"
#include "lathe/optim/optimizer.h"
#include "lathe/sched/schedule.h"
#include "lathe/train/metrics.h"
#include "lathe/train/run.h"
#include "lathe/train/trainer.h"
#include "models/cnn/convnet.h"
#include "tests/support.h"

using lathe::testing::expect_error;
using lathe::testing::TempDir;

TEST(Schedule, OneCycleMatchesPyTorch) {
  // torch.optim.lr_scheduler.OneCycleLR(max_lr=1.0, total_steps=100, pct_start=0.15): lr before
  // optimizer step i, printed by PyTorch 2.11.
  const auto s = lathe::sched::make_lr_schedule("onecycle", 1.0, 100, 0.15, 0.0);
  const std::vector<std::pair<int64_t, double>> want = {
      {0, 0.040000000000000036}, {7, 0.52}, {14, 1.0}, {15, 0.9996585314373913},
      {50, 0.6189691216509193},  {99, 4e-06}};
  for (const auto& [step, lr] : want) EXPECT_NEAR(s.value_at(step), lr, 1e-12) << "step " << step;
}

TEST(Schedule, CosineWithWarmupAndConstant) {
  const auto s = lathe::sched::make_lr_schedule("cosine", 0.1, 110, 10.0 / 110.0, 0.1);
  EXPECT_NEAR(s.value_at(0), 0.01, 1e-12);   // warmup (step + 1) / 10
  EXPECT_NEAR(s.value_at(9), 0.1, 1e-12);
  EXPECT_NEAR(s.value_at(10), 0.1, 1e-12);   // cosine starts at the peak
  EXPECT_NEAR(s.value_at(60), 0.055, 1e-12); // halfway: (0.1 + 0.01) / 2
  EXPECT_NEAR(s.value_at(110), 0.01, 1e-12); // floor = 0.1 · min_ratio
  EXPECT_EQ(s.value_at(37), s.value_at(37));  // a pure function of the step
  const auto c = lathe::sched::make_lr_schedule("constant", 0.3, 50, 0.0, 0.0);
  EXPECT_DOUBLE_EQ(c.value_at(49), 0.3);
  expect_error<lathe::ConfigError>(
      [] { lathe::sched::make_lr_schedule("linear", 1, 10, 0, 0); },
      {"unknown schedule 'linear'", "constant, cosine or onecycle"});
}

TEST(Metrics, ExactOverTheEpochNotAveragedPerBatch) {
  lathe::train::ClassificationMeter m;
  // Batch 1: 3 records, 2 correct, mean loss 1.0; batch 2: 1 record, 0 correct, loss 3.0.
  m.update(at::tensor({1.f, 0.f, 0.f, 1.f, 1.f, 0.f}).view({3, 2}), at::tensor({0L, 1L, 1L}),
           at::tensor(1.0));
  m.update(at::tensor({1.f, 0.f}).view({1, 2}), at::tensor({1L}), at::tensor(3.0));
  const auto r = m.compute();
  EXPECT_DOUBLE_EQ(r.at("accuracy"), 0.5);  // 2 of 4, not mean(2/3, 0/1)
  EXPECT_DOUBLE_EQ(r.at("loss"), 1.5);      // (3·1 + 1·3) / 4
}

TEST(Optimizer, NoWeightDecayOnBiasesAndNorms) {
  lathe::models::ConvNet net(lathe::models::ConvNetOptions().channels({4}));
  lathe::config::OptimSection cfg;
  cfg.name = "adamw";
  cfg.weight_decay = 0.05;
  const auto opt = lathe::optim::make_optimizer(cfg, *net);
  ASSERT_EQ(opt->param_groups().size(), 2u);
  for (const auto& p : opt->param_groups()[0].params()) EXPECT_GE(p.dim(), 2);
  for (const auto& p : opt->param_groups()[1].params()) EXPECT_EQ(p.dim(), 1);
  lathe::optim::set_learning_rate(*opt, 0.5);
  for (auto& g : opt->param_groups()) EXPECT_DOUBLE_EQ(g.options().get_lr(), 0.5);
  cfg.name = "lion";
  expect_error<lathe::ConfigError>([&] { lathe::optim::make_optimizer(cfg, *net); },
                                   {"unknown optimizer 'lion'"});
}

namespace {

/// 2000 Fashion-MNIST training images, scaled to [0, 1].
lathe::data::TensorDataset fashion_subset(int64_t n) {
  const auto split = lathe::data::load_idx_split(lathe::testing::kFashionMnist, "train");
  return lathe::data::TensorDataset{lathe::data::images_to_float(split.images), split.labels}.head(n);
}

}  // namespace

TEST(Trainer, ShortCnnRunLossFalls) {
  lathe::seed_everything(0);
  const auto data = fashion_subset(2000);
  lathe::data::TensorLoader loader(data, 64, true, 0);
  lathe::models::ConvNet net(lathe::models::ConvNetOptions().channels({8, 16}).hidden(32));
  lathe::config::OptimSection ocfg;
  ocfg.lr = 3e-3;
  auto opt = lathe::optim::make_optimizer(ocfg, *net);
  lathe::train::TrainerOptions topts;
  topts.max_epochs = 3;
  topts.progress = "none";
  lathe::train::Trainer trainer(topts, torch::nn::AnyModule(net), *opt,
                                lathe::sched::LrSchedule{"constant", 3e-3, 1, 0, 0});
  const auto history = trainer.fit(loader, nullptr);
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(trainer.global_step(), 3 * loader.num_batches());
  EXPECT_LT(history.back().train.at("loss"), 0.75 * history.front().train.at("loss"));
  EXPECT_GT(history.back().train.at("accuracy"), 0.7);
}

TEST(Trainer, NonFiniteLossStopsTheRun) {
  lathe::data::TensorDataset data{at::full({32, 1, 28, 28}, NAN), at::zeros({32}, at::kLong)};
  lathe::data::TensorLoader loader(data, 8, false, 0);
  lathe::models::ConvNet net(lathe::models::ConvNetOptions().channels({4}));
  auto opt = lathe::optim::make_optimizer(lathe::config::OptimSection{}, *net);
  lathe::train::TrainerOptions topts;
  topts.progress = "none";
  topts.log_every_n_steps = 2;
  lathe::train::Trainer trainer(topts, torch::nn::AnyModule(net), *opt, {});
  expect_error<lathe::TrainError>([&] { trainer.fit(loader, nullptr); },
                                  {"non-finite training loss", "epoch 1, step 2",
                                   "no weights were saved"});
}

TEST(Run, FromConfigToFiles) {
  TempDir dir;
  const auto cfg = lathe::config::load_config(
      lathe::testing::source_dir() + "/configs/fashion_cnn.yaml",
      {"run.dir=" + dir.path().string(), "run.name=t", "run.threads=2", "data.limit_train=1500",
       "data.limit_test=500", "trainer.max_epochs=2", "trainer.progress=none",
       "trainer.log_every_n_steps=5", "model.channels=[8]", "model.hidden=32"});
  const auto result = lathe::train::train_from_config(cfg);
  const auto run = dir / "t";
  for (const auto* f : {"config.yaml", "metrics.jsonl", "model.safetensors", "test_metrics.json"})
    EXPECT_TRUE(std::filesystem::exists(run / f)) << f;

  // metrics.jsonl: one JSON object per line, step lines and one line per epoch, then the test.
  std::ifstream in(run / "metrics.jsonl");
  int epochs = 0, steps = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["kind"] == "epoch") {
      ++epochs;
      EXPECT_TRUE(j.contains("val/accuracy"));
    }
    if (j["kind"] == "step") ++steps;
  }
  EXPECT_EQ(epochs, 2);
  EXPECT_GE(steps, 2 * 1350 / 128 / 5);

  const auto test = nlohmann::json::parse(lathe::testing::read_text(run / "test_metrics.json"));
  EXPECT_DOUBLE_EQ(test["accuracy"].get<double>(), result.test.at("accuracy"));
  EXPECT_GT(result.test.at("accuracy"), 0.5);  // 10 classes: chance is 0.1

  // The resolved config carries the fitted normalisation and reproduces the evaluation.
  const auto resolved = lathe::config::load_config(run / "config.yaml");
  EXPECT_EQ(resolved.data.mean.size(), 1u);
  const auto again = lathe::train::evaluate_run(run, {}, {});
  EXPECT_NEAR(again.at("accuracy"), result.test.at("accuracy"), 1e-12);
}
