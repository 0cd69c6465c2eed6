// trainer.ema: the moving average of the weights against timm's ModelEmaV3 fed the same weights
// step by step (warmup, min_decay, update_after_step, buffers averaged or copied), and its
// exchange into the model for evaluation.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/modules/linear.h>

#include "lathe/ckpt/safetensors.h"
#include "lathe/config/config.h"
#include "lathe/core/runtime.h"
#include "lathe/data/tensor_data.h"
#include "lathe/optim/optimizer.h"
#include "lathe/train/ema.h"
#include "lathe/train/trainer.h"
#include "models/tabular/tabular.h"
#include "tests/support.h"

using lathe::testing::TempDir;
namespace train = lathe::train;
namespace config = lathe::config;

namespace {

/// Keeps the model's tensors and the trainer's EMA after every optimizer step.
struct Recorder : train::Callback {
  lathe::ckpt::NamedTensors model_steps, ema_steps;
  std::string name() const override { return "recorder"; }
  void on_train_step_end(train::Trainer& t, int64_t, int64_t) override {
    const int64_t step = t.global_step();
    for (const auto& item : t.model().ptr()->named_parameters())
      model_steps.emplace_back(fmt::format("model/{}/{}", step, item.key()), item.value().clone());
    for (const auto& item : t.model().ptr()->named_buffers())
      model_steps.emplace_back(fmt::format("model/{}/{}", step, item.key()), item.value().clone());
    for (const auto& [name, tensor] : t.ema()->state())
      ema_steps.emplace_back(fmt::format("ema/{}/{}", step, name), tensor);
  }
};

/// An MLP with BatchNorm (float running statistics, an int64 num_batches_tracked) trained for
/// 8 SGD steps with `ema`; returns what the recorder saw and the buffer names.
struct EmaCase {
  Recorder rec;
  lathe::ckpt::NamedTensors init;
  std::vector<std::string> buffers;
  std::vector<double> decays;  ///< decay_at(0 ... 11)
};

EmaCase train_with(const config::EmaSection& ema) {
  lathe::seed_everything(4);
  lathe::models::MLP net(
      lathe::models::MLPOptions().in_features(4).hidden({8}).out_features(3).batch_norm(true));
  const lathe::data::TensorDataset data{at::randn({64, 4}), at::randint(3, {64}, at::kLong)};
  config::TrainerSection t;
  t.max_epochs = 1;
  t.progress = "none";
  t.ema = ema;
  config::OptimSection o;
  o.name = "sgd";
  o.lr = 0.5;  // large steps: the average lags visibly behind the weights
  auto opt = lathe::optim::make_optimizer(o, *net);
  train::Trainer trainer(t, c10::kCPU, torch::nn::AnyModule(net), train::Task(), opt,
                         train::make_schedules(o, 8, 8));
  EmaCase c;
  c.init = trainer.ema()->state();  // the weights the average starts from
  for (const auto& item : net->named_buffers()) c.buffers.push_back(item.key());
  for (int64_t s = 0; s < 12; ++s) c.decays.push_back(trainer.ema()->decay_at(s));
  auto rec = std::make_shared<Recorder>();
  trainer.add_callback(rec);
  lathe::data::TensorLoader loader(data, 8, /*shuffle=*/true, 0);
  trainer.fit(loader, nullptr);
  EXPECT_EQ(trainer.global_step(), 8);
  c.rec = *rec;
  return c;
}

}  // namespace

TEST(Ema, MatchesTimmModelEmaV3ThroughTheWarmup) {
  TempDir dir;
  // a: warmup (decay clamped below by min_decay at first, above by decay later), two copying
  // steps (update_after_step 1), buffers averaged. b: a fixed decay, buffers copied.
  config::EmaSection a;
  a.decay = 0.7;
  a.warmup = true;
  a.warmup_power = 2.0 / 3.0;
  a.min_decay = 0.45;
  a.update_after_step = 1;
  config::EmaSection b;
  b.decay = 0.8;
  b.buffers = "copy";
  const std::vector<std::pair<std::string, config::EmaSection>> cases{{"a", a}, {"b", b}};
  std::map<std::string, EmaCase> ran;
  std::string files;
  for (const auto& [name, ema] : cases) {
    EmaCase c = train_with(ema);
    lathe::ckpt::NamedTensors out = c.rec.model_steps;
    for (const auto& [n, t] : c.init) out.emplace_back("init/" + n, t);
    const nlohmann::json options{{"decay", ema.decay},
                                 {"min_decay", ema.min_decay},
                                 {"update_after_step", ema.update_after_step},
                                 {"use_warmup", ema.warmup},
                                 {"warmup_gamma", ema.warmup_gamma},
                                 {"warmup_power", ema.warmup_power},
                                 {"exclude_buffers", ema.buffers == "copy"},
                                 {"steps", 8}};
    std::string buffers;
    for (const auto& n : c.buffers) buffers += (buffers.empty() ? "" : ",") + n;
    const auto file = dir / ("case-" + name + ".safetensors");
    lathe::ckpt::save_safetensors(file, out, {{"buffers", buffers}, {"options", options.dump()}});
    files += " " + file.string();
    ran.emplace(name, std::move(c));
  }
  const auto decays = nlohmann::json::parse(lathe::testing::run_parity("ema_oracle.py", files));
  for (const auto& [name, ema] : cases) {
    SCOPED_TRACE(name);
    const EmaCase& c = ran.at(name);
    const auto file = dir / ("case-" + name + ".safetensors");
    // The decay schedule, step by step (timm's get_decay in Python floats).
    const auto& theirs = decays.at(file.string());
    ASSERT_EQ(theirs.size(), c.decays.size());
    for (size_t s = 0; s < c.decays.size(); ++s)
      EXPECT_NEAR(c.decays[s], theirs[s].get<double>(), 1e-15) << "step " << s;
    // The averaged tensors after each of the 8 updates.
    const auto timm = lathe::ckpt::load_safetensors(dir / ("case-" + name + ".timm.safetensors"));
    std::map<std::string, at::Tensor> by_name(timm.tensors.begin(), timm.tensors.end());
    ASSERT_EQ(c.rec.ema_steps.size(), by_name.size());
    double worst = 0;
    for (const auto& [key, ours] : c.rec.ema_steps) {
      ASSERT_TRUE(by_name.count(key)) << key;
      const at::Tensor& ref = by_name.at(key);
      ASSERT_EQ(ours.scalar_type(), ref.scalar_type()) << key;
      worst = std::max(worst,
                       (ours.to(at::kDouble) - ref.to(at::kDouble)).abs().max().item<double>());
    }
    EXPECT_LE(worst, 1e-6);
    std::printf("[ metric   ] case %s: max |lathe EMA - timm ModelEmaV3| over 8 steps = %.3g\n",
                name.c_str(), worst);
  }
  // The average really lags: after the last step it is not the model's weights.
  const auto tensor = [](const lathe::ckpt::NamedTensors& all, const std::string& key) {
    for (const auto& [k, t] : all)
      if (k == key) return t;
    ADD_FAILURE() << key << " not recorded";
    return at::Tensor();
  };
  const auto& rec = ran.at("a").rec;
  EXPECT_FALSE(tensor(rec.ema_steps, "ema/8/layers.0.weight")
                   .equal(tensor(rec.model_steps, "model/8/layers.0.weight")));
}

TEST(Ema, SwapPutsTheAverageInTheModelAndGivesTheWeightsBack) {
  lathe::seed_everything(2);
  torch::nn::Linear net(3, 2);
  config::EmaSection cfg;
  cfg.decay = 0.5;
  train::ModelEma ema(cfg, *net);
  const at::Tensor start = net->weight.clone();
  {
    torch::NoGradGuard no_grad;
    net->weight.add_(1.0);
  }
  ema.update(1);  // decay 0 at the first step: a copy
  ema.update(2);  // 0.5 · (w + 1) + 0.5 · (w + 1)
  {
    torch::NoGradGuard no_grad;
    net->weight.add_(2.0);  // w + 3
  }
  ema.update(3);  // 0.5 · (w + 1) + 0.5 · (w + 3) = w + 2
  const at::Tensor trained = net->weight.clone();
  {
    const train::ModelEma::Swap swap(ema);
    EXPECT_TRUE(at::allclose(net->weight, start + 2.0));
    EXPECT_TRUE(net->weight.requires_grad());  // still the parameter the optimizer holds
  }
  EXPECT_TRUE(net->weight.equal(trained));
  EXPECT_TRUE(at::allclose(ema.state()[0].second, start + 2.0));
}
