// train_from_config / evaluate_run: the path of one run, from config to files on disk.
#include "lathe/train/run.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "lathe/ckpt/checkpoint.h"
#include "lathe/ckpt/state_dict.h"
#include "lathe/ckpt/torch_pickle.h"
#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/gpu.h"
#include "lathe/core/log.h"
#include "lathe/core/runtime.h"
#include "lathe/data/idx.h"
#include "lathe/data/loader.h"
#include "lathe/data/sources.h"
#include "lathe/dist/grad_sync.h"
#include "lathe/dist/process_group.h"
#include "lathe/optim/optimizer.h"
#include "models/registry.h"

namespace lathe::train {

namespace {

/// Keeps the records whose class is in `classes`, relabelled by position in that list.
data::TensorDataset select_classes(const data::TensorDataset& d,
                                   const std::vector<int64_t>& classes) {
  if (classes.empty()) return d;
  const int64_t max_label = d.targets.max().item<int64_t>();
  at::Tensor relabel = at::full({max_label + 1}, -1, at::kLong);  // old id → new id or -1
  for (size_t i = 0; i < classes.size(); ++i) {
    LATHE_CHECK(classes[i] >= 0 && classes[i] <= max_label, ConfigError,
                "data.classes: class {} does not occur in the data (ids 0..{})", classes[i],
                max_label);
    relabel[classes[i]] = static_cast<int64_t>(i);
  }
  const at::Tensor mapped = relabel.index_select(0, d.targets);
  const at::Tensor keep = mapped.ge(0).nonzero().squeeze(1);
  return {d.inputs.index_select(0, keep), mapped.index_select(0, keep)};
}

}  // namespace

RunData load_run_data(const config::DataSection& cfg, uint64_t seed) {
  LATHE_CHECK(cfg.source == "idx", ConfigError,
              "data.source: unknown source '{}'; available: idx (MNIST-style IDX files)",
              cfg.source);
  const Doing doing(fmt::format("loading the idx data at {}", cfg.path));
  const data::IdxSplit train_raw = data::load_idx_split(cfg.path, "train");
  const data::IdxSplit test_raw = data::load_idx_split(cfg.path, "t10k");

  data::TensorDataset full{data::images_to_float(train_raw.images), train_raw.labels};
  data::TensorDataset test{data::images_to_float(test_raw.images), test_raw.labels};
  full = select_classes(full, cfg.classes).head(cfg.limit_train);
  test = select_classes(test, cfg.classes).head(cfg.limit_test);

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

RunLoaders make_run_loaders(const config::DataSection& cfg, uint64_t seed, data::Shard shard) {
  RunLoaders out;
  if (cfg.source == "idx") {  // in memory: the MNIST family fits, and data.classes applies
    LATHE_CHECK(cfg.augment.empty() && cfg.image_size == 0, ConfigError,
                "data.augment / data.image_size: the idx source trains on its images as stored; "
                "remove them (augmentation applies to image_folder)");
    RunData d = load_run_data(cfg, seed);
    const auto loader = [&](const data::TensorDataset& part, int64_t batch, bool train) {
      auto l = std::make_unique<data::TensorLoader>(part, batch, train, seed);
      if (shard.active()) l->set_shard({shard.rank, shard.world, /*pad=*/train});
      return l;
    };
    out.train = loader(d.train, cfg.batch_size / shard.world, true);
    out.val = loader(d.val, cfg.eval_batch_size, false);
    out.test = loader(d.test, cfg.eval_batch_size, false);
    out.mean = d.mean;
    out.std = d.std;
    return out;
  }
  LATHE_CHECK(cfg.classes.empty(), ConfigError,
              "data.classes is supported for source idx only (got source {})", cfg.source);
  const data::DataSplits splits = data::load_splits(cfg, seed);
  data::Loaders loaders = data::make_loaders(cfg, splits, seed, shard);
  out.train = std::move(loaders.train);
  out.val = std::move(loaders.val);
  out.test = std::move(loaders.test);
  out.mean = splits.mean;
  out.std = splits.std;
  out.preprocessing_json = splits.preprocessing_json;
  out.classes = splits.classes;
  if (splits.skipped > 0)
    log::warn("{}: {} bad records skipped (data.skip_bad_records)", cfg.path, splits.skipped);
  return out;
}

namespace {

void write_json(const std::filesystem::path& file, const Metrics& m) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [k, v] : m) j[k] = v;
  write_file_atomic(file, j.dump(2) + "\n");
}

/// Runtime setup every command shares: threads, determinism, seed, device. A data-parallel rank
/// takes its own device (cuda:LOCAL_RANK) or, on the CPU, its share of the cores.
c10::Device prepare_runtime(const config::RunConfig& cfg, const dist::World& world = {}) {
  int threads = cfg.run.threads;
  if (world.active() && threads == 0) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    threads = std::max(1, cores / std::max(1, world.local_size));
  }
  setup_threads(threads);
  set_deterministic(cfg.run.deterministic);
  configure_cuda(cfg.run.deterministic);  // cuDNN benchmark mode unless deterministic
  seed_everything(cfg.run.seed);
  const c10::Device device = select_device(cfg.run.device);
  if (!world.active() || !device.is_cuda()) return device;
  const size_t gpus = runtime_info().cuda_devices.size();
  LATHE_CHECK(static_cast<size_t>(world.local_rank) < gpus, DistError,
              "rank {} (LOCAL_RANK {}) has no GPU of its own: this machine has {}; start at most "
              "{} processes per machine (--devices / --nproc-per-node) or set run.device=cpu",
              world.rank, world.local_rank, gpus, gpus);
  return {c10::kCUDA, static_cast<c10::DeviceIndex>(world.local_rank)};
}

/// Joins the data-parallel group the environment describes (none for a single process).
std::shared_ptr<dist::ProcessGroup> join_world(const config::RunConfig& cfg,
                                               const dist::World& world, c10::Device device) {
  if (!world.active()) return nullptr;
  LATHE_CHECK(cfg.data.batch_size % world.size == 0, ConfigError,
              "{}: data.batch_size = {} is the global batch and must be a multiple of the {} "
              "processes (each takes batch_size / {}); change it or the number of devices",
              cfg.source, cfg.data.batch_size, world.size, world.size);
  if (!world.is_main()) log::set_level(log::Level::warn);  // rank 0 speaks for the run
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(cfg.dist.timeout_s * 1000));
  auto group = dist::ProcessGroup::from_env(device, timeout, cfg.dist.backend);
  log::info("data parallel: {} processes ({} backend), rank 0 logs and writes checkpoints",
            world.size, group->backend());
  return group;
}

}  // namespace

RunResult train_from_config(config::RunConfig cfg, const std::string& resume,
                            const std::vector<std::shared_ptr<Callback>>& extra) {
  const auto t0 = std::chrono::steady_clock::now();
  const dist::World world = dist::world_from_env();
  const c10::Device device = prepare_runtime(cfg, world);
  const auto group = join_world(cfg, world, device);
  const bool main_rank = world.is_main();
  RunResult result;
  result.run_dir = cfg.run_dir();
  std::filesystem::create_directories(result.run_dir);
  log::info("run {} → {} (device {}, {} threads, seed {})", cfg.run.name, result.run_dir.string(),
            device.str(), at::get_num_threads(), cfg.run.seed);

  RunLoaders data = make_run_loaders(cfg.data, cfg.run.seed, {world.rank, world.size});
  if (!data.mean.empty()) {  // the resolved config records the normalisation actually used
    cfg.data.mean = data.mean;
    cfg.data.std = data.std;
  }
  log::info("data: {} train / {} val / {} test records from {}", data.train->size(),
            data.val->size(), data.test->size(), cfg.data.path);
  LATHE_CHECK(data.train->size() > 0, DataError,
              "{}: no training records left (limit_train {}, val_fraction {})", cfg.data.path,
              cfg.data.limit_train, cfg.data.val_fraction);
  if (!data.preprocessing_json.empty() && main_rank)
    write_file_atomic(result.run_dir / "preprocessing.json", data.preprocessing_json);
  if (!data.classes.empty())  // class names in id order, one per line (exported with the model)
    write_file_atomic(result.run_dir / "classes.txt", fmt::format("{}\n", fmt::join(data.classes, "\n")));
  const std::string config_yaml = config::to_yaml(cfg);
  if (main_rank) write_file_atomic(result.run_dir / "config.yaml", config_yaml);
  const std::filesystem::path resume_from =
      resume.empty() ? std::filesystem::path() : ckpt::resolve_resume(resume, result.run_dir);

  torch::nn::AnyModule model = models::build_model(cfg.model);
  auto model_cfg = cfg.model;
  if (!resume_from.empty()) model_cfg.pretrained.clear();  // the checkpoint has the weights
  ckpt::apply_pretrained(*model.ptr(), model_cfg);
  model.ptr()->to(device);
  if (group) dist::broadcast_module(*group, *model.ptr());  // every rank starts from rank 0's
  log::info("model: {} ({} parameters), precision {}", cfg.model.name,
            models::parameter_count(*model.ptr()),
            resolve_precision(cfg.trainer.precision, device));
  auto optimizer = optim::make_optimizer(
      cfg.optim, *model.ptr(),
      {cfg.model.head, cfg.model.backbone_lr_scale, cfg.model.unfreeze_at_epoch > 0});

  data::BatchSource& train_loader = *data.train;
  data::BatchSource& val_loader = *data.val;
  data::BatchSource& test_loader = *data.test;
  const int64_t steps_per_epoch = Trainer::planned_steps(
      [&] { auto t = cfg.trainer; t.max_epochs = 1; t.max_steps = 0; return t; }(),
      train_loader.num_batches());
  const int64_t total_steps = Trainer::planned_steps(cfg.trainer, train_loader.num_batches());

  Trainer trainer(cfg.trainer, device, model, Task(cfg.task), optimizer,
                  make_schedules(cfg.optim, total_steps, steps_per_epoch));
  Task task(cfg.task);
  const std::string monitor = task.default_monitor();
  auto checkpointer = std::make_shared<ckpt::Checkpointer>(
      cfg.checkpoint, result.run_dir / "checkpoints", config_yaml, monitor,
      task.higher_is_better(cfg.checkpoint.monitor.empty() ? monitor : cfg.checkpoint.monitor));
  if (!resume_from.empty() && main_rank) {
    // metrics.jsonl keeps what happened up to the checkpoint; later rows are redone.
    truncate_metrics_log(result.run_dir / "metrics.jsonl", ckpt::checkpoint_step(resume_from));
  }
  add_standard_callbacks(trainer, cfg, result.run_dir, /*resume=*/!resume_from.empty(),
                         main_rank);
  if (cfg.model.unfreeze_at_epoch > 0 && !cfg.model.freeze.empty())
    trainer.add_callback(
        std::make_shared<UnfreezeCallback>(cfg.model.unfreeze_at_epoch, cfg.model.freeze));
  if (main_rank) trainer.add_callback(checkpointer);
  for (const auto& cb : extra) trainer.add_callback(cb);
  // Every rank loads the same checkpoint (written by rank 0 at any world size).
  if (!resume_from.empty()) ckpt::load_checkpoint(trainer, resume_from);
  if (group)
    trainer.set_gradient_sync(
        std::make_shared<dist::GradientSync>(group, *model.ptr(), cfg.dist.bucket_mb));
  result.history = trainer.fit(train_loader, &val_loader);

  if (main_rank)
    ckpt::save_weights(*model.ptr(), result.run_dir / "model.safetensors",
                       {{"lathe_model", cfg.model.name}, {"lathe_version", LATHE_VERSION}});
  if (test_loader.size() > 0) {
    result.test = trainer.test(test_loader);
    Metrics logged;
    for (const auto& [k, v] : result.test) logged["test/" + k] = v;
    trainer.log("test", logged);
  }
  if (main_rank) write_json(result.run_dir / "test_metrics.json", result.test);
  if (group) group->barrier();  // rank 0 serves the store: nobody leaves while others need it
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!result.test.empty()) {
    std::string line;
    for (const auto* k : {"accuracy", "f1_macro", "roc_auc", "perplexity", "r2", "rmse", "loss"})
      if (result.test.count(k)) line += fmt::format(" {} {:.4f}", k, result.test.at(k));
    log::info("test:{} ({} records)", line, test_loader.size());
  }
  log::info("wrote {}/{{config.yaml, metrics.jsonl, metrics.csv, tensorboard/, "
            "model.safetensors, test_metrics.json}} in {:.1f}s",
            result.run_dir.string(), result.seconds);
  return result;
}

void truncate_metrics_log(const std::filesystem::path& file, int64_t step) {
  if (!std::filesystem::exists(file)) return;
  std::ifstream in(file);
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;  // a line cut short by the crash
    if (j.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  write_file_atomic(file, kept);
}

void add_standard_callbacks(Trainer& trainer, const config::RunConfig& cfg,
                            const std::filesystem::path& run_dir, bool resume, bool main_rank) {
  const auto& es = cfg.trainer.early_stopping;
  const auto add_early_stopping = [&] {
    if (!es.monitor.empty())
      trainer.add_callback(
          std::make_shared<EarlyStopping>(es.monitor, es.mode, es.patience, es.min_delta));
  };
  if (!main_rank) {  // it steers the loop, so every rank decides alike (on reduced metrics)
    add_early_stopping();
    return;
  }
  trainer.add_callback(std::make_shared<ProgressCallback>(cfg.trainer.progress));
  const auto jsonl = run_dir / "metrics.jsonl";
  std::vector<LogEvent> earlier;
  if (resume && std::filesystem::exists(jsonl)) {  // metrics.csv is rebuilt from the JSONL log
    std::ifstream in(jsonl);
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      LogEvent e{j.at("kind").get<std::string>(), j.at("epoch").get<int64_t>(),
                 j.at("step").get<int64_t>(), {}};
      for (const auto& [k, v] : j.items())
        if (v.is_number() && k != "epoch" && k != "step") e.values[k] = v.get<double>();
      earlier.push_back(std::move(e));
    }
  }
  trainer.add_callback(std::make_shared<JsonlLogger>(jsonl, resume));
  if (cfg.trainer.csv)
    trainer.add_callback(std::make_shared<CsvLogger>(run_dir / "metrics.csv", std::move(earlier)));
  if (cfg.trainer.tensorboard)
    trainer.add_callback(std::make_shared<TensorBoardLogger>(run_dir / "tensorboard"));
  trainer.add_callback(std::make_shared<LearningRateMonitor>());
  add_early_stopping();
}

Metrics evaluate_run(const std::filesystem::path& run_dir, const std::filesystem::path& weights,
                     const std::vector<std::string>& overrides) {
  const auto config_file = run_dir / "config.yaml";
  LATHE_CHECK(std::filesystem::exists(config_file), ConfigError,
              "{}: no config.yaml here; pass the folder of a finished run (runs/<name>)",
              run_dir.string());
  const config::RunConfig cfg = config::load_config(config_file, overrides);
  const c10::Device device = prepare_runtime(cfg);
  RunLoaders data = make_run_loaders(cfg.data, cfg.run.seed);
  LATHE_CHECK(data.test->size() > 0, DataError, "{}: the test split is empty", cfg.data.path);

  torch::nn::AnyModule model = models::build_model(cfg.model);
  const auto file = weights.empty() ? run_dir / "model.safetensors" : weights;
  ckpt::load_weights_any(*model.ptr(), file, /*strict=*/true);  // .safetensors or torch.save .pt
  model.ptr()->to(device);
  return evaluate(model, Task(cfg.task), *data.test, device, cfg.trainer.precision);
}

}  // namespace lathe::train
