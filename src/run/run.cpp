// train_from_config / evaluate_run: the path of one run, from config to files on disk.
#include "lathe/run/run.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "lathe/ckpt/adapter.h"
#include "lathe/ckpt/checkpoint.h"
#include "lathe/ckpt/state_dict.h"
#include "lathe/ckpt/torch_pickle.h"
#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/gpu.h"
#include "lathe/core/log.h"
#include "lathe/core/runtime.h"
#include "lathe/data/loader.h"
#include "lathe/data/sources.h"
#include "lathe/dist/grad_sync.h"
#include "lathe/dist/process_group.h"
#include "lathe/optim/optimizer.h"
#include "models/layers.h"
#include "models/lora.h"
#include "models/registry.h"

namespace lathe::run {

using train::CsvLogger;
using train::EarlyStopping;
using train::evaluate;
using train::make_schedules;
using train::JsonlLogger;
using train::LearningRateMonitor;
using train::LogEvent;
using train::ProgressCallback;
using train::Task;
using train::TensorBoardLogger;
using train::UnfreezeCallback;

RunLoaders make_run_loaders(const config::DataSection& cfg, uint64_t seed, data::Shard shard) {
  const Doing doing(fmt::format("loading the {} data at {}", cfg.source, cfg.path));
  const data::DataSplits splits = data::load_splits(cfg, seed);
  data::BatchSources loaders = data::make_batch_sources(cfg, splits, seed, shard);
  RunLoaders out;
  out.train = std::move(loaders.train);
  out.val = std::move(loaders.val);
  out.test = std::move(loaders.test);
  out.info = splits.info;
  out.mean = splits.mean;
  out.std = splits.std;
  out.preprocessing_json = splits.preprocessing_json;
  return out;
}

std::vector<std::string> resolve_from_data(config::RunConfig& cfg, const RunLoaders& data) {
  const config::DataInfo& info = data.info;
  LATHE_CHECK(cfg.task.kind == "auto" || cfg.task.kind == info.task, ConfigError,
              "{}: task.kind = {}, but the data ({}) is {}; remove task.kind or change the data",
              cfg.source, cfg.task.kind, info.path, info.task);
  cfg.task.kind = info.task;
  if (cfg.data.source == "csv") cfg.data.task = info.task;
  if (info.side > 0) cfg.data.image_size = info.side;
  if (!data.mean.empty()) {  // the resolved config records the normalisation actually used
    cfg.data.mean = data.mean;
    cfg.data.std = data.std;
  }
  std::vector<std::string> lines{fmt::format("data says: {}", info.describe())};
  for (const auto& line : models::resolve_sizes(cfg.model, info))
    lines.push_back(fmt::format("model.{}", line));
  return lines;
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
  c10::Device device = select_device(cfg.run.device);
  if (world.active() && device.is_cuda()) {
    const size_t gpus = runtime_info().cuda_devices.size();
    LATHE_CHECK(static_cast<size_t>(world.local_rank) < gpus, DistError,
                "rank {} (LOCAL_RANK {}) has no GPU of its own: this machine has {}; start at "
                "most {} processes per machine (--devices / --nproc-per-node) or set "
                "run.device=cpu",
                world.rank, world.local_rank, gpus, gpus);
    device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(world.local_rank));
  }
  use_device(device);  // current before anything else (NCCL, streams, allocator) uses CUDA
  return device;
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
  const auto size_of = [](const std::unique_ptr<data::BatchSource>& l) {
    return l ? l->size() : int64_t{0};
  };
  log::info("data: {} train / {} val / {} test records from {}", size_of(data.train),
            size_of(data.val), size_of(data.test), cfg.data.path);
  for (const auto& line : resolve_from_data(cfg, data)) log::info("{}", line);
  ckpt::resolve_lora(cfg.model, cfg.source);  // an adapter folder says its targets and rank
  if (!data.preprocessing_json.empty() && main_rank)
    write_file_atomic(result.run_dir / "preprocessing.json", data.preprocessing_json);
  if (!data.info.classes.empty() && main_rank)  // class names in id order (exported with the model)
    write_file_atomic(result.run_dir / "classes.txt",
                      fmt::format("{}\n", fmt::join(data.info.classes, "\n")));
  const std::string config_yaml = config::to_yaml(cfg);
  if (main_rank) write_file_atomic(result.run_dir / "config.yaml", config_yaml);
  const std::filesystem::path resume_from =
      resume.empty() ? std::filesystem::path() : ckpt::resolve_resume(resume, result.run_dir);

  torch::nn::AnyModule model = models::build_model(cfg.model);
  auto model_cfg = cfg.model;
  if (!resume_from.empty()) model_cfg.pretrained.clear();  // the checkpoint has the weights
  ckpt::apply_pretrained(*model.ptr(), model_cfg);
  if (cfg.model.lora.enabled())  // adapters before resuming: the checkpoint holds them
    ckpt::apply_lora_config(*model.ptr(), cfg.model, /*load_weights=*/resume_from.empty());
  model.ptr()->to(device);
  if (group) dist::broadcast_module(*group, *model.ptr());  // every rank starts from rank 0's
  int64_t trainable = 0;
  for (const auto& p : model.ptr()->parameters()) trainable += p.requires_grad() ? p.numel() : 0;
  log::info("model: {} ({} parameters), {} trainable, precision {}", cfg.model.name,
            models::parameter_count(*model.ptr()), trainable,
            resolve_precision(cfg.trainer.precision, device));
  optim::GroupRules rules;
  rules.head = cfg.model.head;
  rules.backbone_lr_scale = cfg.model.backbone_lr_scale;
  rules.include_frozen = cfg.model.unfreeze_at_epoch > 0;
  if (cfg.optim.layer_decay != 1.0) {  // timm's numbering: embeddings 0, blocks, head L + 1
    const models::LayerIds layers = models::transformer_layers(cfg.model.name, *model.ptr());
    rules.layer_of = layers.of;
    rules.num_layers = layers.num_layers;
  }
  auto optimizer = optim::make_optimizer(cfg.optim, *model.ptr(), rules);

  data::BatchSource& train_loader = *data.train;
  data::BatchSource* val_loader = data.val.get();  // null when the split is empty
  data::BatchSource* test_loader = data.test.get();
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
  result.history = trainer.fit(train_loader, val_loader);

  if (models::has_lora(*model.ptr())) {  // peft's files, then the merged model (export, eval)
    if (main_rank) ckpt::save_adapter(*model.ptr(), result.run_dir, cfg.model);
    models::merge_lora(*model.ptr());
  }
  if (main_rank)
    ckpt::save_weights(*model.ptr(), result.run_dir / "model.safetensors",
                       {{"lathe_model", cfg.model.name}, {"lathe_version", LATHE_VERSION}});
  if (test_loader != nullptr && test_loader->size() > 0) {
    result.test = trainer.test(*test_loader);
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
    log::info("test:{} ({} records)", line, test_loader->size());
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
  int64_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;  // a line cut short by the crash
    const auto s = j.is_object() ? j.find("step") : j.end();
    LATHE_CHECK(j.is_object() && s != j.end() && s->is_number_integer(), CheckpointError,
                "{}:{}: not a metrics row (a JSON object with an integer 'step'); the run "
                "folder is damaged: move the file away to resume without the earlier rows",
                file.string(), number);
    if (s->get<int64_t>() <= step) kept += line + "\n";
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
    int64_t number = 0;
    for (std::string line; std::getline(in, line);) {
      ++number;
      LogEvent e;
      try {
        const auto j = nlohmann::json::parse(line);
        e = {j.at("kind").get<std::string>(), j.at("epoch").get<int64_t>(),
             j.at("step").get<int64_t>(), {}};
        for (const auto& [k, v] : j.items())
          if (v.is_number() && k != "epoch" && k != "step") e.values[k] = v.get<double>();
      } catch (const nlohmann::json::exception& ex) {
        throw CheckpointError(fmt::format(
            "{}:{}: not a metrics row ({}); the run folder is damaged: move the file away to "
            "resume without the earlier rows",
            jsonl.string(), number, ex.what()));
      }
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
  config::RunConfig cfg = config::load_config(config_file, overrides);
  const c10::Device device = prepare_runtime(cfg);
  RunLoaders data = make_run_loaders(cfg.data, cfg.run.seed);
  resolve_from_data(cfg, data);
  LATHE_CHECK(data.test && data.test->size() > 0, DataError, "{}: the test split is empty",
              cfg.data.path);

  torch::nn::AnyModule model = models::build_model(cfg.model);
  const auto file = weights.empty() ? run_dir / "model.safetensors" : weights;
  // A LoRA run's checkpoints hold its adapters (its model.safetensors, merged weights): attach
  // them, load, and merge as the run does.
  if (cfg.model.lora.enabled()) {
    const auto tensors = ckpt::load_state_dict_file(file);
    if (std::any_of(tensors.begin(), tensors.end(), [](const auto& t) {
          return t.first.find(".lora_A.") != std::string::npos;
        }))
      ckpt::apply_lora_config(*model.ptr(), cfg.model, /*load_weights=*/false);
  }
  ckpt::load_weights_any(*model.ptr(), file, /*strict=*/true);  // .safetensors or torch.save .pt
  models::merge_lora(*model.ptr());
  model.ptr()->to(device);
  return evaluate(model, Task(cfg.task), *data.test, device, cfg.trainer.precision);
}

}  // namespace lathe::run
