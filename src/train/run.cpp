// train_from_config / evaluate_run: the path of one run, from config to files on disk.
#include "lathe/train/run.h"

#include <chrono>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "lathe/ckpt/state_dict.h"
#include "lathe/ckpt/torch_pickle.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/log.h"
#include "lathe/core/runtime.h"
#include "lathe/data/idx.h"
#include "lathe/optim/optimizer.h"
#include "models/registry.h"

namespace lathe::train {

RunData load_run_data(const config::DataSection& cfg, uint64_t seed) {
  LATHE_CHECK(cfg.source == "idx", ConfigError,
              "data.source: unknown source '{}'; available: idx (MNIST-style IDX files)",
              cfg.source);
  const data::IdxSplit train_raw = data::load_idx_split(cfg.path, "train");
  const data::IdxSplit test_raw = data::load_idx_split(cfg.path, "t10k");

  data::TensorDataset full{data::images_to_float(train_raw.images), train_raw.labels};
  data::TensorDataset test{data::images_to_float(test_raw.images), test_raw.labels};
  full = full.head(cfg.limit_train);
  test = test.head(cfg.limit_test);

  RunData out;
  std::tie(out.train, out.val) = data::split_holdout(full, cfg.val_fraction, seed);
  out.test = test;
  if (cfg.mean.empty()) {
    std::tie(out.mean, out.std) = data::channel_stats(out.train.inputs);  // train split only
  } else {
    out.mean = cfg.mean;
    out.std = cfg.std;
  }
  for (auto* d : {&out.train, &out.val, &out.test})
    if (d->size() > 0) d->inputs = data::normalize(d->inputs, out.mean, out.std);
  return out;
}

namespace {

void write_json(const std::filesystem::path& file, const Metrics& m) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [k, v] : m) j[k] = v;
  write_file_atomic(file, j.dump(2) + "\n");
}

/// Runtime setup every command shares: threads, determinism, seed, device.
c10::Device prepare_runtime(const config::RunConfig& cfg) {
  setup_threads(cfg.run.threads);
  set_deterministic(cfg.run.deterministic);
  seed_everything(cfg.run.seed);
  return select_device(cfg.run.device);
}

}  // namespace

RunResult train_from_config(config::RunConfig cfg) {
  const auto t0 = std::chrono::steady_clock::now();
  const c10::Device device = prepare_runtime(cfg);
  RunResult result;
  result.run_dir = cfg.run_dir();
  std::filesystem::create_directories(result.run_dir);
  log::info("run {} → {} (device {}, {} threads, seed {})", cfg.run.name, result.run_dir.string(),
            device.str(), at::get_num_threads(), cfg.run.seed);

  RunData data = load_run_data(cfg.data, cfg.run.seed);
  cfg.data.mean = data.mean;  // the resolved config records the normalisation actually used
  cfg.data.std = data.std;
  log::info("data: {} train / {} val / {} test records from {}", data.train.size(),
            data.val.size(), data.test.size(), cfg.data.path);
  LATHE_CHECK(data.train.size() > 0, DataError,
              "{}: no training records left (limit_train {}, val_fraction {})", cfg.data.path,
              cfg.data.limit_train, cfg.data.val_fraction);
  write_file_atomic(result.run_dir / "config.yaml", config::to_yaml(cfg));

  torch::nn::AnyModule model = models::build_model(cfg.model);
  model.ptr()->to(device);
  log::info("model: {} ({} parameters)", cfg.model.name, models::parameter_count(*model.ptr()));
  auto optimizer = optim::make_optimizer(cfg.optim, *model.ptr());

  data::TensorLoader train_loader(data.train, cfg.data.batch_size, /*shuffle=*/true,
                                  cfg.run.seed);
  data::TensorLoader val_loader(data.val, cfg.data.eval_batch_size, false, cfg.run.seed);
  data::TensorLoader test_loader(data.test, cfg.data.eval_batch_size, false, cfg.run.seed);
  const auto schedule = sched::make_lr_schedule(
      cfg.optim.schedule, cfg.optim.lr, cfg.trainer.max_epochs * train_loader.num_batches(),
      cfg.optim.warmup_fraction, cfg.optim.min_lr_ratio);

  TrainerOptions topts;
  topts.max_epochs = cfg.trainer.max_epochs;
  topts.log_every_n_steps = cfg.trainer.log_every_n_steps;
  topts.progress = cfg.trainer.progress;
  topts.device = device;
  topts.metrics_file = result.run_dir / "metrics.jsonl";
  Trainer trainer(topts, model, *optimizer, schedule);
  result.history = trainer.fit(train_loader, &val_loader);

  ckpt::save_weights(*model.ptr(), result.run_dir / "model.safetensors",
                     {{"lathe_model", cfg.model.name}, {"lathe_version", LATHE_VERSION}});
  if (data.test.size() > 0) {
    result.test = trainer.evaluate(test_loader);
    trainer.log().write("test", cfg.trainer.max_epochs, trainer.global_step(),
                        {{"test/loss", result.test.at("loss")},
                         {"test/accuracy", result.test.at("accuracy")}});
  }
  write_json(result.run_dir / "test_metrics.json", result.test);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!result.test.empty())
    log::info("test: loss {:.4f} accuracy {:.4f} ({} records)", result.test.at("loss"),
              result.test.at("accuracy"), data.test.size());
  log::info("wrote {}/{{config.yaml, metrics.jsonl, model.safetensors, test_metrics.json}} in "
            "{:.1f}s",
            result.run_dir.string(), result.seconds);
  return result;
}

Metrics evaluate_run(const std::filesystem::path& run_dir, const std::filesystem::path& weights,
                     const std::vector<std::string>& overrides) {
  const auto config_file = run_dir / "config.yaml";
  LATHE_CHECK(std::filesystem::exists(config_file), ConfigError,
              "{}: no config.yaml here; pass the folder of a finished run (runs/<name>)",
              run_dir.string());
  const config::RunConfig cfg = config::load_config(config_file, overrides);
  const c10::Device device = prepare_runtime(cfg);
  RunData data = load_run_data(cfg.data, cfg.run.seed);
  LATHE_CHECK(data.test.size() > 0, DataError, "{}: the test split is empty", cfg.data.path);

  torch::nn::AnyModule model = models::build_model(cfg.model);
  const auto file = weights.empty() ? run_dir / "model.safetensors" : weights;
  ckpt::load_weights_any(*model.ptr(), file, /*strict=*/true);  // .safetensors or torch.save .pt
  model.ptr()->to(device);
  data::TensorLoader test_loader(data.test, cfg.data.eval_batch_size, false, cfg.run.seed);
  return evaluate(model, test_loader, device);
}

}  // namespace lathe::train
