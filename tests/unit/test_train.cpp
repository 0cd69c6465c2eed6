// train (with optim and sched): schedules against torch.optim.lr_scheduler, metrics against
// scikit-learn, accumulation, the fp16 scaler, early stopping, NaN detection, TensorBoard
// read-back, determinism, and a whole run from config to files.
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include "lathe/ckpt/safetensors.h"
#include "lathe/config/config.h"
#include "lathe/config/optim_names.h"
#include "lathe/core/error.h"
#include "lathe/core/runtime.h"
#include "lathe/data/idx.h"
#include "lathe/optim/fused_adamw.h"
#include "lathe/optim/optimizer.h"
#include "lathe/sched/schedule.h"
#include "lathe/train/amp.h"
#include "lathe/train/metrics.h"
#include "lathe/run/run.h"
#include "lathe/train/trainer.h"
#include "models/cnn/convnet.h"
#include "tests/support.h"

using lathe::testing::expect_error;
using lathe::testing::TempDir;
namespace train = lathe::train;
namespace config = lathe::config;

namespace {

nlohmann::json oracle(const std::string& args) {
  return nlohmann::json::parse(lathe::testing::run_parity("train_oracle.py", args));
}

config::ScheduleSection spec(const std::string& name) {
  config::ScheduleSection s;
  s.name = name;
  return s;
}

/// A trainer over a Linear model, for tests that drive it by hand.
struct LinearRig {
  torch::nn::Linear net{torch::nn::LinearOptions(3, 1)};
  lathe::optim::OptimizerBundle opt;
  std::unique_ptr<train::Trainer> trainer;
  explicit LinearRig(config::TrainerSection t = {}, config::OptimSection o = {}) {
    t.progress = "none";
    opt = lathe::optim::make_optimizer(o, *net);
    config::TaskSection task;
    task.kind = "regression";
    trainer = std::make_unique<train::Trainer>(t, c10::kCPU, torch::nn::AnyModule(net),
                                               train::Task(task), opt,
                                               train::make_schedules(o, 100, 10));
  }
};

}  // namespace

TEST(Schedule, MatchesTorchSchedulers) {
  const auto want = oracle("schedules");
  std::map<std::string, config::ScheduleSection> ours;
  ours["step"] = spec("step");
  ours["step"].step_size = 7;
  ours["step"].gamma = 0.5;
  ours["multistep"] = spec("multistep");
  ours["multistep"].milestones = {5, 12, 30};
  ours["exponential"] = spec("exponential");
  ours["exponential"].gamma = 0.9;
  ours["cosine"] = spec("cosine");
  ours["cosine"].min_ratio = 0.05;
  ours["polynomial"] = spec("polynomial");
  ours["polynomial"].power = 2.0;
  ours["onecycle"] = spec("onecycle");
  ours["onecycle"].pct_start = 0.25;
  ours["warmup_cosine"] = spec("cosine");
  ours["warmup_cosine"].warmup_steps = 8;
  ours["warmup_cosine"].warmup_start_factor = 0.1;
  ours["constant"] = spec("constant");
  ours["wsd"] = spec("wsd");
  ours["wsd"].warmup_steps = 8;
  ours["wsd"].warmup_start_factor = 0.1;
  ours["wsd"].decay_fraction = 0.25;
  ours["wsd"].min_ratio = 0.1;
  ours["step_per_epoch"] = spec("step");  // 40 steps = 4 epochs of 10
  ours["step_per_epoch"].interval = "epoch";
  ours["step_per_epoch"].step_size = 1;
  ours["step_per_epoch"].gamma = 0.5;
  for (const auto& [name, s] : ours) {
    const lathe::sched::Schedule schedule(s, 1.0, 40, 10);
    const auto& curve = want.at(name);
    ASSERT_EQ(curve.size(), 40u);
    for (int64_t step = 0; step < 40; ++step)
      EXPECT_NEAR(schedule.value_at(step), curve[step].get<double>(), 1e-9)
          << name << " at step " << step;
  }
}

TEST(Schedule, EpochIntervalWsdAndPlateau) {
  auto s = spec("step");
  s.interval = "epoch";
  s.step_size = 2;
  s.gamma = 0.5;
  const lathe::sched::Schedule per_epoch(s, 1.0, 100, 10);  // 10 steps per epoch
  EXPECT_DOUBLE_EQ(per_epoch.value_at(19), 1.0);             // still epoch 1
  EXPECT_DOUBLE_EQ(per_epoch.value_at(20), 0.5);             // epoch 2 starts
  auto w = spec("wsd");
  w.warmup_steps = 10;
  w.warmup_start_factor = 0.0;
  w.decay_fraction = 0.2;
  const lathe::sched::Schedule wsd(w, 1.0, 110, 10);
  EXPECT_DOUBLE_EQ(wsd.value_at(5), 0.5);     // warming up
  EXPECT_DOUBLE_EQ(wsd.value_at(60), 1.0);    // stable
  EXPECT_DOUBLE_EQ(wsd.value_at(100), 0.5);   // half-way through the last 20 steps
  EXPECT_DOUBLE_EQ(wsd.value_at(110), 0.0);

  auto p = spec("plateau");
  p.patience = 2;
  p.factor = 0.5;
  lathe::sched::Plateau plateau(p);
  for (double v : {1.0, 0.9, 0.95, 0.95}) EXPECT_FALSE(plateau.observe(v));
  EXPECT_TRUE(plateau.observe(0.95));  // third validation without improvement (> patience)
  EXPECT_DOUBLE_EQ(plateau.scale(), 0.5);
}

TEST(Metrics, MatchScikitLearn) {
  lathe::seed_everything(3);
  const int64_t n = 301, k = 4;
  // Tied scores (rounded to 1/20) check that ROC-AUC ranks ties as sklearn does; the meter gets
  // untied logits, since top-k and argmax of tied values have no single right answer.
  const at::Tensor tied = (at::randn({n, k}) * 20).round() / 20;
  const at::Tensor logits = tied + 1e-3 * at::rand({n, k});
  const at::Tensor target = at::randint(0, k, {n}, at::kLong);
  const at::Tensor reg_true = at::randn({n, 2});
  const at::Tensor reg_pred = reg_true + 0.3 * at::randn({n, 2});

  train::ClassificationMeter cls(/*detailed=*/true, /*top_k=*/2);
  train::RegressionMeter reg;
  for (int64_t start = 0; start < n; start += 37) {  // uneven batches
    const int64_t len = std::min<int64_t>(37, n - start);
    cls.update(logits.narrow(0, start, len), target.narrow(0, start, len), at::tensor(1.0));
    reg.update(reg_pred.narrow(0, start, len), reg_true.narrow(0, start, len), at::tensor(0.0));
  }
  TempDir dir;
  lathe::ckpt::save_safetensors(dir / "m.safetensors", {{"scores", logits.softmax(1)},
                                                        {"tied", tied.softmax(1)},
                                                        {"target", target},
                                                        {"reg_pred", reg_pred},
                                                        {"reg_true", reg_true}});
  const auto want = oracle("metrics " + (dir / "m.safetensors").string());
  const auto got = cls.compute();
  for (const auto* key : {"accuracy", "top2_accuracy", "precision_macro", "recall_macro",
                          "f1_macro", "precision_micro", "recall_micro", "f1_micro",
                          "precision_weighted", "recall_weighted", "f1_weighted", "roc_auc"})
    EXPECT_NEAR(got.at(key), want.at(key).get<double>(), 1e-6) << key;
  const at::Tensor cm = cls.confusion();
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j)
      EXPECT_EQ(cm[i][j].item<int64_t>(), want["confusion"][i][j].get<int64_t>());
  EXPECT_NEAR(train::roc_auc_binary(tied.softmax(1).select(1, 1), target.eq(1)),
              want["roc_auc_binary_class1"].get<double>(), 1e-9);
  const auto r = reg.compute();
  // sklearn computes on the float32 values it read; we accumulate in float64.
  for (const auto* key : {"mae", "mse", "rmse", "r2"})
    EXPECT_NEAR(r.at(key), want.at(key).get<double>(), 1e-6) << key;
}

TEST(Metrics, LanguageModelPerplexityIgnoresPadding) {
  // Two batches padded differently, the padding id (0, the ignore_index here) also a token the
  // model predicts at the padded positions: loss, perplexity and accuracy count the real tokens
  // only, each batch weighted by its real tokens — counting the padding changes all three.
  lathe::seed_everything(3);
  train::LanguageModelMeter m(/*ignore_index=*/0);
  const std::vector<at::Tensor> targets{at::tensor({2L, 4L, 1L, 0L}).view({1, 4}),
                                        at::tensor({3L, 0L, 0L, 0L}).view({1, 4})};
  double nll = 0, correct = 0, real = 0, padded_weighting = 0;
  for (const at::Tensor& target : targets) {
    const at::Tensor logits = at::randn({1, 4, 5}, at::kDouble);  // (B, T, V)
    logits.select(2, 0).masked_fill_(target.eq(0), 10.0);        // the padding predicts id 0
    const at::Tensor loss = at::cross_entropy_loss(logits.view({-1, 5}), target.view(-1), {},
                                                   at::Reduction::Mean, /*ignore_index=*/0);
    m.update(logits, target, loss);
    const at::Tensor logp = logits.log_softmax(2);
    for (int64_t t = 0; t < 4; ++t) {
      const int64_t id = target[0][t].item<int64_t>();
      if (id == 0) continue;
      nll -= logp[0][t][id].item<double>();
      correct += logits[0][t].argmax().item<int64_t>() == id;
      real += 1;
    }
    padded_weighting += loss.item<double>() * 4;
  }
  const auto r = m.compute();
  EXPECT_NEAR(r.at("loss"), nll / real, 1e-12);
  EXPECT_NEAR(r.at("perplexity"), std::exp(nll / real), 1e-9);
  EXPECT_NEAR(r.at("accuracy"), correct / real, 1e-12);
  EXPECT_GT(std::abs(padded_weighting / 8 - nll / real), 1e-3);  // the mask matters here
  EXPECT_NE(correct / real, (correct + 4) / 8);
}

TEST(Optimizer, GroupsAndScheduledHyperparameters) {
  lathe::models::ConvNet net(lathe::models::ConvNetOptions().channels({4}));
  config::OptimSection cfg;
  cfg.weight_decay = 0.05;
  auto opt = lathe::optim::make_optimizer(cfg, *net);
  ASSERT_EQ(opt->param_groups().size(), 2u);
  for (const auto& p : opt->param_groups()[0].params()) EXPECT_GE(p.dim(), 2);
  for (const auto& p : opt->param_groups()[1].params()) EXPECT_EQ(p.dim(), 1);
  lathe::optim::set_hyperparameters(opt, 0.5, 0.8, 0.01);
  const auto g0 = lathe::optim::group_values(opt, 0), g1 = lathe::optim::group_values(opt, 1);
  EXPECT_DOUBLE_EQ(g0.lr, 0.5);
  EXPECT_DOUBLE_EQ(g0.momentum, 0.8);  // adamw: beta1
  EXPECT_DOUBLE_EQ(g0.weight_decay, 0.01);
  EXPECT_DOUBLE_EQ(g1.weight_decay, 0.0);  // biases and norms never decay
  net->parameters()[0].set_requires_grad(false);
  cfg.name = "rmsprop";
  auto frozen = lathe::optim::make_optimizer(cfg, *net);
  size_t count = 0;
  for (const auto& g : frozen->param_groups()) count += g.params().size();
  EXPECT_EQ(count, net->parameters().size() - 1);  // frozen parameters are left out
}

TEST(Optimizer, FusedAdamWMatchesAdamW) {
  // The fused ATen kernel (lathe's default adamw) against LibTorch's AdamW, on CPU where both
  // run; also in capturable mode (device-side step counts and lr, what a CUDA graph records)
  // under a changing lr.
  for (const bool capturable : {false, true}) {
    SCOPED_TRACE(capturable);
    lathe::seed_everything(5);
    const at::Tensor w0 = at::randn({16, 8}), b0 = at::randn({16});
    std::vector<at::Tensor> a = {w0.clone().requires_grad_(), b0.clone().requires_grad_()};
    std::vector<at::Tensor> f = {w0.clone().requires_grad_(), b0.clone().requires_grad_()};
    const auto opts = torch::optim::AdamWOptions(0.01).weight_decay(0.1).betas({0.8, 0.99});
    torch::optim::AdamW plain(a, opts);
    lathe::optim::FusedAdamW fused(f, opts);
    fused.set_capturable(capturable);
    for (int step = 0; step < 20; ++step) {
      const double lr = 0.01 * (1.0 - step / 20.0);
      plain.param_groups()[0].options().set_lr(lr);
      fused.param_groups()[0].options().set_lr(lr);
      fused.sync_hyperparameters();
      const at::Tensor x = at::randn({4, 8});
      for (auto* set : {&a, &f}) {
        auto& p = *set;
        p[0].mutable_grad() = at::Tensor();
        p[1].mutable_grad() = at::Tensor();
        ((x.matmul(p[0].t()) + p[1]).tanh().sum()).backward();
      }
      plain.step();
      fused.step();
    }
    EXPECT_LE((a[0] - f[0]).abs().max().item<double>(), 1e-6);
    EXPECT_LE((a[1] - f[1]).abs().max().item<double>(), 1e-6);
    // The host counts (what checkpoints save) advance on graph replays too.
    auto& st = static_cast<torch::optim::AdamWParamState&>(
        *fused.state().at(f[0].unsafeGetTensorImpl()));
    EXPECT_EQ(st.step(), 20);
    fused.count_replayed_step();
    EXPECT_EQ(st.step(), capturable ? 21 : 20);
  }
  config::OptimSection cfg;
  cfg.fused = "true";
  lathe::models::ConvNet net(lathe::models::ConvNetOptions().channels({4}));
  EXPECT_NE(dynamic_cast<lathe::optim::FusedAdamW*>(
                lathe::optim::make_optimizer(cfg, *net).optimizer.get()),
            nullptr);
}

TEST(Trainer, GradientAccumulationMatchesTheLargeBatch) {
  lathe::seed_everything(1);
  const lathe::data::TensorDataset data{at::randn({64, 3}), at::randn({64})};
  const auto run = [&](int64_t batch, int64_t accumulate) {
    config::TrainerSection t;
    t.max_epochs = 2;
    t.accumulate_grad_batches = accumulate;
    config::OptimSection o;
    o.name = "sgd";
    o.lr = 0.1;
    LinearRig rig(t, o);
    lathe::seed_everything(7);
    rig.net->reset_parameters();
    lathe::data::TensorLoader loader(data, batch, /*shuffle=*/false, 0);
    rig.trainer->fit(loader, nullptr);
    EXPECT_EQ(rig.trainer->global_step(), 2 * 64 / (batch * accumulate));
    return rig.net->weight.clone();
  };
  const at::Tensor big = run(32, 1), accumulated = run(8, 4);
  EXPECT_LE((big - accumulated).abs().max().item<double>(), 1e-6);  // 4 × 8 ≡ 32
}

TEST(Trainer, Fp16ScalerSkipsStepsWithInfAndBacksOff) {
  torch::nn::Linear net(2, 1);
  config::OptimSection o;
  o.name = "sgd";
  auto opt = lathe::optim::make_optimizer(o, *net);
  train::GradScaler scaler(true, /*init_scale=*/1024.0, 2.0, 0.5, /*growth_interval=*/2);
  const at::Tensor before = net->weight.clone();
  // An injected inf in the gradient: the step is skipped and the scale halves.
  scaler.scale(net->forward(at::ones({1, 2})).sum()).backward();
  net->weight.mutable_grad()[0][0] = INFINITY;
  scaler.step(*opt);
  scaler.update();
  EXPECT_TRUE(net->weight.equal(before));
  EXPECT_DOUBLE_EQ(scaler.state().scale, 512.0);
  EXPECT_EQ(scaler.skipped_steps(), 1);
  // Clean steps: gradients are unscaled before the step, and after 2 the scale grows.
  for (int i = 0; i < 2; ++i) {
    opt->zero_grad();
    scaler.scale(net->forward(at::ones({1, 2})).sum()).backward();
    scaler.unscale(*opt);
    EXPECT_NEAR(net->weight.grad()[0][0].item<double>(), 1.0, 1e-6);  // d(sum)/dw = x = 1
    scaler.step(*opt);
    scaler.update();
  }
  EXPECT_EQ(scaler.skipped_steps(), 1);  // the two clean steps were taken
  EXPECT_DOUBLE_EQ(scaler.state().scale, 1024.0);
  EXPECT_FALSE(net->weight.equal(before));
}

TEST(Trainer, EarlyStoppingAfterPatienceValidations) {
  LinearRig rig;
  train::EarlyStopping es("val/loss", "min", /*patience=*/2, /*min_delta=*/0.01);
  for (double v : {1.0, 0.8, 0.795, 0.9}) {
    EXPECT_FALSE(rig.trainer->stop_requested());
    es.on_validation_end(*rig.trainer, {{"val/loss", v}});
  }
  EXPECT_TRUE(rig.trainer->stop_requested());  // 0.795 and 0.9 did not beat 0.8 by 0.01
  EXPECT_DOUBLE_EQ(es.best(), 0.8);
  train::EarlyStopping restored("val/loss", "min", 2, 0.01);
  restored.load_state_json(es.state_json());
  EXPECT_EQ(restored.wait(), 2);
  expect_error<lathe::ConfigError>([&] { es.on_validation_end(*rig.trainer, {{"val/r2", 1}}); },
                                   {"'val/loss' is not a validation metric", "val/r2"});
}

TEST(Trainer, NonFiniteLossStopsTheRun) {
  config::TrainerSection t;
  t.log_every_n_steps = 2;
  LinearRig rig(t);
  const lathe::data::TensorDataset data{at::full({32, 3}, NAN), at::zeros({32})};
  lathe::data::TensorLoader loader(data, 8, false, 0);
  expect_error<lathe::TrainError>([&] { rig.trainer->fit(loader, nullptr); },
                                  {"non-finite training loss", "epoch 1, step 2",
                                   "no weights were saved"});
}

TEST(Trainer, ShortCnnRunLossFalls) {
  lathe::seed_everything(0);
  const auto split = lathe::data::load_idx_split(lathe::testing::kFashionMnist, "train");
  const auto data =
      lathe::data::TensorDataset{lathe::data::images_to_float(split.images), split.labels}.head(2000);
  lathe::data::TensorLoader loader(data, 64, true, 0);
  lathe::models::ConvNet net(lathe::models::ConvNetOptions().channels({8, 16}).hidden(32));
  config::OptimSection o;
  o.lr = 3e-3;
  auto opt = lathe::optim::make_optimizer(o, *net);
  config::TrainerSection t;
  t.max_epochs = 3;
  t.progress = "none";
  train::Trainer trainer(t, c10::kCPU, torch::nn::AnyModule(net), train::Task(), opt,
                         train::make_schedules(o, 100, 32));
  const auto history = trainer.fit(loader, nullptr);
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(trainer.global_step(), 3 * loader.num_batches());
  EXPECT_LT(history.back().train.at("loss"), 0.75 * history.front().train.at("loss"));
  EXPECT_GT(history.back().train.at("accuracy"), 0.7);
}

namespace {

config::RunConfig small_run(const TempDir& dir, const std::string& name,
                            std::vector<std::string> extra = {}) {
  std::vector<std::string> o = {"run.dir=" + dir.path().string(), "run.name=" + name,
                                "run.threads=2", "data.limit_train=1500", "data.limit_test=500",
                                "trainer.max_epochs=2", "trainer.progress=none",
                                "trainer.log_every_n_steps=5", "model.channels=[8]",
                                "model.hidden=32"};
  o.insert(o.end(), extra.begin(), extra.end());
  return config::load_config(lathe::testing::source_dir() + "/configs/fashion_cnn.yaml", o);
}

std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& file) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

}  // namespace

TEST(Run, FromConfigToFilesAndTensorBoard) {
  TempDir dir;
  const auto result = lathe::run::train_from_config(small_run(dir, "t"));
  const auto run = dir / "t";
  for (const auto* f : {"config.yaml", "metrics.jsonl", "metrics.csv", "model.safetensors",
                        "test_metrics.json"})
    EXPECT_TRUE(std::filesystem::exists(run / f)) << f;

  int epochs = 0, steps = 0;
  std::map<int64_t, double> step_loss;
  for (const auto& j : read_jsonl(run / "metrics.jsonl")) {
    if (j["kind"] == "epoch") {
      ++epochs;
      EXPECT_TRUE(j.contains("val/accuracy") && j.contains("val/f1_macro"));
    }
    if (j["kind"] == "step") {
      ++steps;
      step_loss[j["step"].get<int64_t>()] = j["train/loss"].get<double>();
    }
  }
  EXPECT_EQ(epochs, 2);
  EXPECT_GE(steps, 2 * 1350 / 128 / 5);

  const auto test = nlohmann::json::parse(lathe::testing::read_text(run / "test_metrics.json"));
  EXPECT_DOUBLE_EQ(test["accuracy"].get<double>(), result.test.at("accuracy"));
  EXPECT_TRUE(test.contains("roc_auc") && test.contains("f1_weighted"));
  EXPECT_GT(result.test.at("accuracy"), 0.5);  // 10 classes: chance is 0.1

  const std::string csv = lathe::testing::read_text(run / "metrics.csv");
  EXPECT_EQ(csv.rfind("kind,epoch,step,", 0), 0u) << csv.substr(0, 200);
  EXPECT_NE(csv.find("test/accuracy"), std::string::npos);

  // TensorBoard's own reader sees the same train/loss values at the same steps.
  const auto tb = oracle("tensorboard " + (run / "tensorboard").string());
  ASSERT_TRUE(tb.contains("train/loss")) << tb.dump();
  EXPECT_EQ(tb["train/loss"].size(), step_loss.size());
  for (const auto& point : tb["train/loss"])
    EXPECT_NEAR(point[1].get<double>(), step_loss.at(point[0].get<int64_t>()), 1e-5);
  EXPECT_TRUE(tb.contains("val/accuracy") && tb.contains("lr/group0"));

  // The resolved config carries the fitted normalisation and reproduces the evaluation.
  const auto resolved = config::load_config(run / "config.yaml");
  EXPECT_EQ(resolved.data.mean.size(), 1u);
  const auto again = lathe::run::evaluate_run(run, {}, {});
  EXPECT_NEAR(again.at("accuracy"), result.test.at("accuracy"), 1e-12);
}

TEST(Run, SameSeedDeterministicModeGivesTheSameLossCurveBitForBit) {
  TempDir dir;
  const std::vector<std::string> opts = {"run.deterministic=true", "trainer.max_epochs=1",
                                         "data.limit_train=800", "trainer.log_every_n_steps=1"};
  lathe::run::train_from_config(small_run(dir, "a", opts));
  lathe::run::train_from_config(small_run(dir, "b", opts));
  const auto curve = [&](const std::string& name) {
    std::vector<std::string> losses;  // compared as written: every digit of the double
    for (const auto& j : read_jsonl(dir / name / "metrics.jsonl"))
      if (j["kind"] == "step") losses.push_back(j["train/loss"].dump());
    return losses;
  };
  const auto a = curve("a");
  EXPECT_GE(a.size(), 5u);
  EXPECT_EQ(a, curve("b"));
}

TEST(Recipes, EachRunsEndToEndAtSmallSize) {
  // Every recipe in configs/ trains a few steps, validates, tests and writes its run folder.
  // The CSV data sets come from scripts/make_datasets.py (run by scripts/bootstrap.sh).
  TempDir dir;
  const std::string src = lathe::testing::source_dir();
  const std::vector<std::pair<std::string, std::vector<std::string>>> recipes = {
      {"wine_mlp.yaml", {"data.path=" + src + "/datasets/wine.csv", "trainer.max_epochs=3"}},
      {"diabetes_regression.yaml",
       {"data.path=" + src + "/datasets/diabetes.csv", "trainer.max_epochs=3"}},
      {"fortunes_char_lstm.yaml",
       {"trainer.max_steps=8", "data.limit_train=400", "model.hidden_size=32"}},
      {"fortunes_gpt.yaml", {"trainer.max_steps=8", "data.limit_train=400", "model.n_layer=1"}},
      {"fashion_cnn.yaml", {"trainer.max_steps=8", "data.limit_train=1000", "data.limit_test=200"}},
      {"fashion_small.yaml",
       {"trainer.max_steps=8", "data.limit_train=1000", "data.limit_test=200"}},
  };
  for (const auto& [file, extra] : recipes) {
    SCOPED_TRACE(file);
    std::vector<std::string> o = {"run.dir=" + dir.path().string(), "trainer.progress=none",
                                  "trainer.tensorboard=false", "trainer.log_every_n_steps=2"};
    o.insert(o.end(), extra.begin(), extra.end());
    const auto cfg = config::load_config(src + "/configs/" + file, o);
    const auto result = lathe::run::train_from_config(cfg);
    ASSERT_FALSE(result.history.empty());
    EXPECT_TRUE(std::isfinite(result.history.back().train.at("loss")));
    EXPECT_FALSE(result.test.empty());
    const char* key = cfg.task.kind == "lm" ? "perplexity"
                      : cfg.task.kind == "regression" ? "r2" : "accuracy";
    EXPECT_TRUE(result.test.count(key)) << key;
    EXPECT_TRUE(std::filesystem::exists(cfg.run_dir() / "model.safetensors"));
  }
}

TEST(Trainer, Bf16AutocastOnCpuAndUnfreezingAtAnEpoch) {
  // Autocast: inside the guard a matmul runs in bfloat16 on the CPU; outside it does not.
  const at::Tensor a = at::randn({4, 4}), b = at::randn({4, 4});
  {
    train::AutocastGuard amp(c10::DeviceType::CPU, at::kBFloat16, true);
    EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
  }
  EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat);
  // A bf16 run trains (loss finite and falling) with the float32 master weights.
  lathe::seed_everything(0);
  config::TrainerSection t;
  t.precision = "bf16";
  t.max_epochs = 10;
  config::OptimSection o;
  o.name = "sgd";
  o.lr = 0.05;
  LinearRig rig(t, o);
  const at::Tensor x = at::randn({64, 3});
  const lathe::data::TensorDataset data{x, x.sum(1)};  // a linear target the model can fit
  lathe::data::TensorLoader loader(data, 16, true, 0);
  const auto history = rig.trainer->fit(loader, nullptr);
  EXPECT_LT(history.back().train.at("loss"), 0.5 * history.front().train.at("loss"));
  EXPECT_EQ(rig.net->weight.scalar_type(), at::kFloat);

  // Unfreezing: frozen at the start, trainable from the given epoch on.
  rig.net->weight.set_requires_grad(false);
  train::UnfreezeCallback unfreeze(3, {"weight"});
  unfreeze.on_train_epoch_start(*rig.trainer, 2);
  EXPECT_FALSE(rig.net->weight.requires_grad());
  unfreeze.on_train_epoch_start(*rig.trainer, 3);
  EXPECT_TRUE(rig.net->weight.requires_grad());
}

// ---- the Metric seam: a user's metric from C++, and the table of built-in directions ----------

namespace {

/// Recall of one class: a metric lathe does not have, written as a user would.
struct ClassRecall : train::Metric {
  explicit ClassRecall(int64_t cls) : cls_(cls) {}
  std::string name() const override { return fmt::format("recall_{}", cls_); }
  bool higher_is_better() const override { return true; }
  void update(const at::Tensor& logits, const at::Tensor& target) override {
    const at::Tensor mine = target.eq(cls_);
    hits_ += logits.argmax(1).eq(cls_).logical_and(mine).sum().item<double>();
    total_ += mine.sum().item<double>();
  }
  double compute() const override { return total_ > 0 ? hits_ / total_ : NAN; }
  void reduce(const train::MeterReduce& r) override {
    at::Tensor both = at::tensor({hits_, total_}, at::kDouble);
    r.sum(both);
    hits_ = both[0].item<double>();
    total_ = both[1].item<double>();
  }
  void reset() override { hits_ = total_ = 0; }

 private:
  int64_t cls_;
  double hits_ = 0, total_ = 0;
};

}  // namespace

TEST(Metric, AUserMetricIsReportedMonitoredAndGivesTheDirection) {
  config::TaskSection tc;
  tc.kind = "classification";
  train::Task task(tc);
  task.add_metric([] { return std::make_unique<ClassRecall>(1); });
  EXPECT_TRUE(task.higher_is_better("val/recall_1"));
  EXPECT_FALSE(task.higher_is_better("val/loss"));
  EXPECT_TRUE(task.higher_is_better("val/top5_accuracy"));
  EXPECT_TRUE(task.higher_is_better("test/f1_macro"));
  expect_error<lathe::ConfigError>([&] { (void)task.higher_is_better("val/lossy_recall"); },
                                   {"'val/lossy_recall' is not a metric", "recall_1", "f1_macro"});
  expect_error<lathe::ConfigError>(
      [&] { task.add_metric([] { return std::make_unique<ClassRecall>(1); }); },
      {"'recall_1' was added already"});

  // Validation reports it, exactly; early stopping in mode auto maximises it.
  lathe::seed_everything(2);
  torch::nn::Linear net(4, 3);
  config::TrainerSection t;
  t.max_epochs = 6;
  t.progress = "none";
  config::OptimSection o;
  auto opt = lathe::optim::make_optimizer(o, *net);
  train::Trainer trainer(t, c10::kCPU, torch::nn::AnyModule(net), task, opt,
                         train::make_schedules(o, 100, 4));
  auto es = std::make_shared<train::EarlyStopping>("val/recall_1", "auto", 2, 0.0);
  trainer.add_callback(es);
  const lathe::data::TensorDataset d{at::randn({64, 4}), at::randint(3, {64}, at::kLong)};
  lathe::data::TensorLoader loader(d, 16, true, 0), val(d, 16, false, 0);
  trainer.fit(loader, &val);
  // Maximised: a higher recall_1 becomes the best, a lower one does not (a minimising early
  // stopping would do the opposite).
  const double best = es->best();
  ASSERT_TRUE(std::isfinite(best));
  es->on_validation_end(trainer, {{"val/recall_1", best - 0.25}});
  EXPECT_DOUBLE_EQ(es->best(), best);
  es->on_validation_end(trainer, {{"val/recall_1", best + 0.125}});
  EXPECT_DOUBLE_EQ(es->best(), best + 0.125);
  const auto m = trainer.validate(val);
  ASSERT_TRUE(m.count("recall_1"));
  torch::NoGradGuard no_grad;
  const at::Tensor pred = net->forward(d.inputs).argmax(1), mine = d.targets.eq(1);
  EXPECT_NEAR(m.at("recall_1"),
              pred.eq(1).logical_and(mine).sum().item<double>() / mine.sum().item<double>(),
              1e-12);
}

TEST(Task, AUserLossTrainsWhileTheKindsMetricsStay) {
  config::TaskSection tc;
  tc.kind = "classification";
  train::Task task(tc);
  EXPECT_FALSE(task.has_user_loss());
  int64_t calls = 0;
  task.set_loss([&calls](const at::Tensor& logits, const at::Tensor& y) {
    ++calls;
    return 2.0 * at::nll_loss(at::log_softmax(logits, 1), y);  // twice the cross-entropy
  });
  EXPECT_TRUE(task.has_user_loss());
  const at::Tensor logits = at::randn({5, 3}), y = at::tensor({0, 2, 1, 1, 0}, at::kLong);
  EXPECT_NEAR(task.loss(logits, y).item<double>(),
              2.0 * at::cross_entropy_loss(logits, y).item<double>(), 1e-6);

  // The Trainer minimises it (its gradient is the user's) and reports the kind's metrics.
  lathe::seed_everything(4);
  torch::nn::Linear net(4, 3);
  config::TrainerSection t;
  t.max_epochs = 3;
  t.progress = "none";
  config::OptimSection o;
  o.lr = 0.05;
  auto opt = lathe::optim::make_optimizer(o, *net);
  train::Trainer trainer(t, c10::kCPU, torch::nn::AnyModule(net), task, opt,
                         train::make_schedules(o, 100, 4));
  const at::Tensor x = at::randn({64, 4});
  const lathe::data::TensorDataset d{x, x.slice(1, 0, 3).argmax(1)};
  lathe::data::TensorLoader loader(d, 16, true, 0);
  calls = 0;
  const auto history = trainer.fit(loader, &loader);
  EXPECT_EQ(calls, 3 * 4 + 3 * 4);  // every training batch and every validation batch
  EXPECT_LT(history.back().train.at("loss"), history.front().train.at("loss"));
  EXPECT_TRUE(history.back().val.count("val/accuracy"));

  expect_error<lathe::ConfigError>([&] { task.set_loss({}); },
                                   {"Task::set_loss: the loss function is empty"});
  task.set_loss([](const at::Tensor& out, const at::Tensor&) { return out.sum(1); });
  expect_error<lathe::TrainError>([&] { task.loss(logits, y); },
                                  {"returned a tensor of shape [5]", "must return a scalar"});
}

TEST(Metric, EveryBuiltInMetricIsInTheDirectionTable) {
  // The meters' keys and the table the monitors read must not drift apart.
  const auto check = [](const std::string& kind, const train::Metrics& computed) {
    config::TaskSection tc;
    tc.kind = kind;
    const train::Task task(tc);
    for (const auto& [name, value] : computed)
      EXPECT_NO_THROW((void)task.higher_is_better("val/" + name)) << kind << ": " << name;
  };
  train::ClassificationMeter cls(/*detailed=*/true, 5);
  cls.update(at::randn({8, 6}), at::randint(6, {8}, at::kLong), at::scalar_tensor(1.0));
  check("classification", cls.compute());
  train::RegressionMeter reg;
  reg.update(at::randn({8}), at::randn({8}), at::scalar_tensor(1.0));
  check("regression", reg.compute());
  train::LanguageModelMeter lm;
  lm.update(at::randn({2, 4, 7}), at::randint(7, {2, 4}, at::kLong), at::scalar_tensor(1.0));
  check("lm", lm.compute());
}

// ---- trainer options against PyTorch training the same Linear model on the same batches -------

TEST(TrainerOptions, ClippingSmoothingClassWeightsAndLossesMatchTorch) {
  struct Case {
    std::string what, loss;
    double label_smoothing = 0, huber_delta = 1.0, clip = 0;
    std::string clip_algorithm = "norm";
    std::vector<double> class_weights;
  };
  const std::vector<Case> cases = {
      {"label smoothing + class weights + clip norm", "cross_entropy", 0.1, 1.0, 0.5, "norm",
       {1.0, 2.0, 0.5}},
      {"clip value", "cross_entropy", 0.0, 1.0, 0.05, "value", {}},
      {"l1", "l1", 0, 1.0, 0, "norm", {}},
      {"huber", "huber", 0, 0.3, 0, "norm", {}},
  };
  TempDir dir;
  for (const auto& c : cases) {
    const bool cls = c.loss == "cross_entropy";
    lathe::seed_everything(21);
    torch::nn::Linear net(5, cls ? 3 : 1);
    const at::Tensor x = at::randn({32, 5}) * 3;
    const at::Tensor y = cls ? at::randint(3, {32}, at::kLong) : at::randn({32}) * 4;
    lathe::ckpt::save_safetensors(dir / "case.safetensors", {{"weight", net->weight.detach().clone()},
                                                           {"bias", net->bias.detach().clone()},
                                                           {"x", x},
                                                           {"y", y}});
    config::TrainerSection t;
    t.max_epochs = 2;
    t.progress = "none";
    t.gradient_clip_val = c.clip;
    t.gradient_clip_algorithm = c.clip_algorithm;
    config::OptimSection o;
    o.name = "sgd";
    o.lr = 0.1;
    o.momentum = 0.9;
    o.weight_decay = 0.0;
    o.schedule = spec("constant");
    config::TaskSection task;
    task.kind = cls ? "classification" : "regression";
    task.loss = c.loss;
    task.label_smoothing = c.label_smoothing;
    task.huber_delta = c.huber_delta;
    task.class_weights = c.class_weights;
    auto opt = lathe::optim::make_optimizer(o, *net);
    train::Trainer trainer(t, c10::kCPU, torch::nn::AnyModule(net), train::Task(task), opt,
                           train::make_schedules(o, 8, 4));
    lathe::data::TensorLoader loader({x, y}, 8, /*shuffle=*/false, 0);
    trainer.fit(loader, nullptr);
    ASSERT_EQ(trainer.global_step(), 8) << c.what;

    nlohmann::json spec_json{{"loss", c.loss},       {"label_smoothing", c.label_smoothing},
                             {"huber_delta", c.huber_delta}, {"clip", c.clip},
                             {"clip_algorithm", c.clip_algorithm}, {"class_weights", c.class_weights},
                             {"lr", 0.1},           {"momentum", 0.9},
                             {"steps", 8},          {"batch", 8}};
    const auto want = oracle("options " + (dir / "case.safetensors").string() + " '" +
                             spec_json.dump() + "'");
    const at::Tensor w = net->weight.detach().flatten(), b = net->bias.detach();
    const auto ww = want.at("weight").get<std::vector<double>>();
    const auto wb = want.at("bias").get<std::vector<double>>();
    ASSERT_EQ(static_cast<size_t>(w.numel()), ww.size());
    for (size_t i = 0; i < ww.size(); ++i)
      EXPECT_NEAR(w[static_cast<int64_t>(i)].item<double>(), ww[i], 1e-5) << c.what << " w" << i;
    for (size_t i = 0; i < wb.size(); ++i)
      EXPECT_NEAR(b[static_cast<int64_t>(i)].item<double>(), wb[i], 1e-5) << c.what << " b" << i;
  }
}

TEST(TrainerOptions, PlateauMatchesReduceLROnPlateau) {
  const std::vector<double> values = {1.0, 0.9, 0.95, 0.91, 0.905, 0.92, 0.7, 0.71, 0.72,
                                      0.73, 0.69, 0.70, 0.71, 0.72, 0.73, 0.74};
  for (const std::string mode : {"min", "max"}) {
    auto s = spec("plateau");
    s.mode = mode;
    s.factor = 0.5;
    s.patience = 2;
    s.threshold = 0.01;
    lathe::sched::Plateau plateau(s);
    std::vector<double> ours;
    for (double v : values) {
      plateau.observe(v);
      ours.push_back(plateau.scale());
    }
    const nlohmann::json req{{"mode", mode}, {"factor", 0.5}, {"patience", 2},
                             {"threshold", 0.01}, {"values", values}};
    const auto want = oracle("plateau '" + req.dump() + "'").get<std::vector<double>>();
    ASSERT_EQ(want.size(), ours.size());
    for (size_t i = 0; i < ours.size(); ++i) EXPECT_DOUBLE_EQ(ours[i], want[i]) << mode << " " << i;
  }
}

namespace {

/// Every logged row of one kind, with the step it was logged at.
struct RowsOf : train::Callback {
  std::string kind;
  std::vector<std::pair<int64_t, train::Metrics>> rows;
  explicit RowsOf(std::string k) : kind(std::move(k)) {}
  std::string name() const override { return "rows_" + kind; }
  void on_log(train::Trainer&, const train::LogEvent& e) override {
    if (e.kind == kind) rows.emplace_back(e.step, e.values);
  }
};

}  // namespace

TEST(TrainerOptions, Fp16TrainingThroughTheTrainerScalesAndLearns) {
  // trainer.precision=fp16 on the CPU: autocast to float16 and the dynamic scaler, logged.
  lathe::seed_everything(4);
  torch::nn::Linear net(8, 3);
  const at::Tensor x = at::randn({256, 8});
  const at::Tensor y = x.narrow(1, 0, 3).argmax(1);  // learnable
  config::TrainerSection t;
  t.max_epochs = 6;
  t.progress = "none";
  t.precision = "fp16";
  t.log_every_n_steps = 4;
  config::OptimSection o;
  o.lr = 3e-2;
  auto opt = lathe::optim::make_optimizer(o, *net);
  train::Trainer trainer(t, c10::kCPU, torch::nn::AnyModule(net), train::Task(), opt,
                         train::make_schedules(o, 96, 16));
  auto steps = std::make_shared<RowsOf>("step");
  trainer.add_callback(steps);
  lathe::data::TensorLoader loader({x, y}, 16, true, 0);
  const auto history = trainer.fit(loader, nullptr);
  ASSERT_FALSE(steps->rows.empty());
  for (const auto& [step, row] : steps->rows) {
    EXPECT_GT(row.at("amp/scale"), 0.0);  // the scaler's state is logged with every step row
    EXPECT_EQ(row.at("amp/skipped_steps"), 0.0);
  }
  EXPECT_LT(history.back().train.at("loss"), 0.7 * history.front().train.at("loss"));
  EXPECT_GT(history.back().train.at("accuracy"), 0.8);
}

TEST(TrainerOptions, ValEveryNStepsValidatesAtThoseSteps) {
  LinearRig rig([] {
    config::TrainerSection t;
    t.max_epochs = 2;
    t.val_every_n_steps = 3;
    return t;
  }());
  auto val_rows = std::make_shared<RowsOf>("val");
  rig.trainer->add_callback(val_rows);
  const lathe::data::TensorDataset d{at::randn({40, 3}), at::randn({40})};
  lathe::data::TensorLoader loader(d, 8, true, 0), val(d, 8, false, 0);  // 5 steps an epoch
  rig.trainer->fit(loader, &val);
  std::vector<int64_t> at_steps;
  for (const auto& [step, row] : val_rows->rows) at_steps.push_back(step);
  EXPECT_EQ(at_steps, (std::vector<int64_t>{3, 6, 9}));  // not once per epoch
}

TEST(TrainerOptions, MomentumAndWeightDecaySchedulesDriveTheOptimizer) {
  // optim.momentum_schedule and optim.weight_decay_schedule: every step runs with the values
  // their schedules give for it, in every group that has them.
  config::OptimSection o;
  o.name = "sgd";
  o.momentum = 0.9;
  o.weight_decay = 0.1;
  o.schedule = spec("constant");
  o.momentum_schedule = spec("cosine");
  o.momentum_schedule.min_ratio = 0.5;
  o.weight_decay_schedule = spec("polynomial");
  o.weight_decay_schedule.power = 1.0;
  struct Probe : train::Callback {
    std::vector<std::pair<double, double>> seen;  // (momentum, weight decay of the decay group)
    std::string name() const override { return "probe"; }
    void on_train_step_end(train::Trainer& t, int64_t, int64_t) override {
      const auto v = lathe::optim::group_values(t.optimizer(), 0);
      seen.emplace_back(v.momentum, v.weight_decay);
    }
  };
  LinearRig rig(
      [] {
        config::TrainerSection t;
        t.max_epochs = 2;
        return t;
      }(),
      o);
  auto probe = std::make_shared<Probe>();
  rig.trainer->add_callback(probe);
  const lathe::data::TensorDataset d{at::randn({40, 3}), at::randn({40})};
  lathe::data::TensorLoader loader(d, 8, true, 0);  // 5 steps an epoch, 10 in all
  rig.trainer->fit(loader, nullptr);
  ASSERT_EQ(probe->seen.size(), 10u);
  // LinearRig's schedules plan 100 steps of 10 per epoch.
  const lathe::sched::Schedule momentum(o.momentum_schedule, 0.9, 100, 10);
  const lathe::sched::Schedule decay(o.weight_decay_schedule, 0.1, 100, 10);
  for (int64_t s = 0; s < 10; ++s) {
    EXPECT_DOUBLE_EQ(probe->seen[static_cast<size_t>(s)].first, momentum.value_at(s)) << s;
    EXPECT_DOUBLE_EQ(probe->seen[static_cast<size_t>(s)].second, decay.value_at(s)) << s;
  }
  EXPECT_LT(probe->seen.back().first, 0.9);  // the schedules moved the values
  EXPECT_LT(probe->seen.back().second, 0.1);
}

TEST(NameTables, EveryOptimizerAndScheduleInTheTableDispatches) {
  // Validation and dispatch read one table (config/optim_names.h): every name in it builds what
  // its name says — the optimizer of that class with the section's settings, the schedule of
  // that shape (checked against its closed form at steps that tell the shapes apart) — and a
  // name outside it is refused by validation with the table's names.
  torch::nn::Linear net(3, 2);
  std::set<std::string> optimizers_checked;
  for (const auto& entry : lathe::config::optimizers()) {
    const std::string name(entry.name);
    SCOPED_TRACE(name);
    config::OptimSection o;
    o.name = name;
    o.lr = 0.125;
    o.momentum = 0.7;
    o.betas = {0.8, 0.95};
    o.eps = 1e-7;
    o.alpha = 0.97;
    auto bundle = lathe::optim::make_optimizer(o, *net);
    ASSERT_NE(bundle.optimizer, nullptr);
    EXPECT_EQ(bundle.kind, name);
    auto& options = bundle.optimizer->param_groups().at(0).options();
    EXPECT_DOUBLE_EQ(options.get_lr(), 0.125);
    if (name == "sgd") {
      ASSERT_NE(dynamic_cast<torch::optim::SGD*>(bundle.optimizer.get()), nullptr);
      EXPECT_DOUBLE_EQ(static_cast<torch::optim::SGDOptions&>(options).momentum(), 0.7);
    } else if (name == "adam") {
      ASSERT_NE(dynamic_cast<torch::optim::Adam*>(bundle.optimizer.get()), nullptr);
      const auto& a = static_cast<torch::optim::AdamOptions&>(options);
      EXPECT_EQ(a.betas(), std::make_tuple(0.8, 0.95));
      EXPECT_DOUBLE_EQ(a.eps(), 1e-7);
    } else if (name == "adamw") {
      ASSERT_NE(dynamic_cast<torch::optim::AdamW*>(bundle.optimizer.get()), nullptr);
      const auto& a = static_cast<torch::optim::AdamWOptions&>(options);
      EXPECT_EQ(a.betas(), std::make_tuple(0.8, 0.95));
      EXPECT_DOUBLE_EQ(a.eps(), 1e-7);
    } else if (name == "rmsprop") {
      ASSERT_NE(dynamic_cast<torch::optim::RMSprop*>(bundle.optimizer.get()), nullptr);
      const auto& r = static_cast<torch::optim::RMSpropOptions&>(options);
      EXPECT_DOUBLE_EQ(r.alpha(), 0.97);
      EXPECT_DOUBLE_EQ(r.momentum(), 0.7);
    } else {
      ADD_FAILURE() << "optimizer '" << name << "' is in the table but not in this test";
    }
    optimizers_checked.insert(name);
  }
  EXPECT_EQ(optimizers_checked, (std::set<std::string>{"sgd", "adam", "adamw", "rmsprop"}));

  // Base 1 over 40 steps; each shape's closed form (torch's schedulers for the same settings).
  const double pi = std::acos(-1.0);
  const auto cosine = [&](double from, double to, double pct) {
    return to + (from - to) / 2.0 * (std::cos(pi * pct) + 1.0);
  };
  const std::map<std::string, std::function<double(double)>> shapes{
      {"constant", [](double) { return 1.0; }},
      {"step", [](double t) { return std::pow(0.5, std::floor(t / 10)); }},
      {"multistep", [](double t) { return std::pow(0.5, (t >= 10) + (t >= 30)); }},
      {"exponential", [](double t) { return std::pow(0.5, t); }},
      {"cosine", [&](double t) { return cosine(1.0, 0.0, t / 40); }},
      {"polynomial", [](double t) { return std::pow(1.0 - t / 40, 2.0); }},
      {"onecycle",  // OneCycleLR: 1/25 up to 1 at step 0.25·40 − 1, then down to 1/25/1e4
       [&](double t) {
         return t <= 9 ? cosine(1.0 / 25, 1.0, t / 9) : cosine(1.0, 1.0 / 25 / 1e4, (t - 9) / 30);
       }},
      {"wsd", [](double t) { return t < 36 ? 1.0 : 1.0 - (t - 36) / 4; }},  // last 10% decays
      {"plateau", [](double) { return 1.0; }},  // constant: sched::Plateau scales it
      {"none", [](double) { return 1.0; }},     // the optimizer's value, unscheduled
  };
  for (const auto& entry : lathe::config::schedules()) {
    const std::string name(entry.name);
    SCOPED_TRACE(name);
    const auto shape = shapes.find(name);
    ASSERT_NE(shape, shapes.end()) << "schedule '" << name << "' is in the table but not in this test";
    auto s = spec(name);
    s.step_size = 10;
    s.gamma = 0.5;
    s.milestones = {10, 30};
    s.power = 2.0;
    s.pct_start = 0.25;
    s.decay_fraction = 0.1;
    const lathe::sched::Schedule schedule(s, 1.0, 40, 10);
    for (const int64_t t : {0, 1, 5, 9, 10, 20, 29, 30, 35, 36, 38, 39})
      EXPECT_NEAR(schedule.value_at(t), shape->second(static_cast<double>(t)), 1e-12) << "step " << t;
  }
  EXPECT_EQ(lathe::config::schedules().size(), shapes.size());
  expect_error<lathe::ConfigError>(
      [] {
        config::parse_config("data: {path: x}\nmodel: {name: mlp}\n", "<t>",
                             {"optim.schedule.name=cosin"});
      },
      {"optim.schedule.name = 'cosin' must be one of constant, step", "did you mean 'cosine'?"});
  expect_error<lathe::ConfigError>(
      [] {
        config::parse_config("data: {path: x}\nmodel: {name: mlp}\n", "<t>", {"optim.name=adamx"});
      },
      {"optim.name = 'adamx' must be one of sgd, adam, adamw, rmsprop"});
}
