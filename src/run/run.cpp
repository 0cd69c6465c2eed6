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
#include "lathe/core/signals.h"
#include "lathe/data/loader.h"
#include "lathe/data/sources.h"
#include "lathe/dist/grad_sync.h"
#include "lathe/dist/process_group.h"
#include "lathe/optim/optimizer.h"
#include "lathe/run/mlflow.h"
#include "lathe/run/report.h"
#include "lathe/run/runs.h"
#include "lathe/train/ema.h"
#include "lathe/train/profiler.h"
#include "models/hf_config.h"
#include "models/layers.h"
#include "models/lora.h"
#include "models/registry.h"
#include "src/run/estimator_run.h"

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
  for (const auto& line : models::apply_hf_config(cfg.model))  // a Hugging Face folder's sizes
    lines.push_back(fmt::format("model.{}", line));
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

/// Why the trainer stopped before its plan (max_epochs, max_steps): early stopping's verdict,
/// or "" when it ran as planned.
std::string early_stop_reason(const Trainer& trainer, const config::TrainerSection& cfg) {
  if (!trainer.stop_requested() || (cfg.max_steps > 0 && trainer.global_step() >= cfg.max_steps))
    return "";
  for (const auto& cb : trainer.callbacks())
    if (const auto es = std::dynamic_pointer_cast<EarlyStopping>(cb); es && es->wait() > 0)
      return fmt::format("early stopping: {} no better than {:.6g} for {} validations",
                         cfg.early_stopping.monitor, es->best(), es->wait());
  return "stopped before trainer.max_epochs";
}

/// The MLflow tracker of trainer.mlflow: tags that say what ran; a resumed run continues the
/// MLflow run its run.json names (when it was tracked at the same server).
std::shared_ptr<MlflowTracker> make_mlflow_tracker(const config::RunConfig& cfg,
                                                   const std::filesystem::path& run_dir,
                                                   const std::string& config_yaml, bool resumed) {
  std::string run_id;
  if (resumed && std::filesystem::exists(run_dir / "run.json")) {
    std::ifstream in(run_dir / "run.json");
    const auto record = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (record.is_object() && record.contains("mlflow") && record["mlflow"].is_object() &&
        record["mlflow"].value("tracking_uri", "") == cfg.trainer.mlflow.tracking_uri)
      run_id = record["mlflow"].value("run_id", "");
  }
  const char* user = std::getenv("USER");
  std::map<std::string, std::string> tags = {
      {"mlflow.source.name", cfg.source},
      {"mlflow.source.type", "LOCAL"},
      {"mlflow.user", user != nullptr ? user : ""},
      {"lathe.version", LATHE_VERSION},
      {"lathe.model", cfg.model.name},
      {"lathe.task", cfg.task.kind},
      {"lathe.data", cfg.data.source + ":" + cfg.data.path},
      {"lathe.run_dir", std::filesystem::absolute(run_dir).string()}};
  const auto& m = cfg.trainer.mlflow;
  return std::make_shared<MlflowTracker>(m, m.run_name.empty() ? cfg.run.name : m.run_name,
                                         config_yaml, std::move(tags), run_id);
}

}  // namespace

RunResult train_from_config(config::RunConfig cfg, const std::string& resume,
                            const std::vector<std::shared_ptr<Callback>>& extra) {
  if (models::model_spec(cfg.model).estimator)  // trees, forests, SVMs: fitted by their library
    return detail::run_estimator(std::move(cfg), resume);
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
  // A Hugging Face folder's generation settings (its eos ids) stay with the run: generate and
  // export --hf read them there.
  if (const std::filesystem::path hf = cfg.model.pretrained;
      main_rank && models::is_hf_folder(hf) && std::filesystem::exists(hf / "generation_config.json"))
    copy_file_atomic(hf / "generation_config.json", result.run_dir / "generation_config.json");
  const std::filesystem::path resume_from =
      resume.empty() ? std::filesystem::path() : ckpt::resolve_resume(resume, result.run_dir);
  if (main_rank) record_run_start(result.run_dir, resume_from.string());

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
  const auto& profile = cfg.trainer.profile;
  if (main_rank && !profile.steps.empty())  // one profiler per process: the main rank records
    trainer.add_callback(std::make_shared<train::ProfilerCallback>(
        profile.steps[0], profile.steps[1],
        profile.path.empty() ? result.run_dir / "profile" : std::filesystem::path(profile.path),
        device, profile.rows));
  if (cfg.model.unfreeze_at_epoch > 0 && !cfg.model.freeze.empty())
    trainer.add_callback(
        std::make_shared<UnfreezeCallback>(cfg.model.unfreeze_at_epoch, cfg.model.freeze));
  if (main_rank) trainer.add_callback(checkpointer);
  std::shared_ptr<MlflowTracker> mlflow;
  if (main_rank && !cfg.trainer.mlflow.tracking_uri.empty()) {
    mlflow = make_mlflow_tracker(cfg, result.run_dir, config_yaml, !resume_from.empty());
    trainer.add_callback(mlflow);
  }
  for (const auto& cb : extra) trainer.add_callback(cb);
  // Every rank loads the same checkpoint (written by rank 0 at any world size).
  if (!resume_from.empty()) ckpt::load_checkpoint(trainer, resume_from);
  if (group)
    trainer.set_gradient_sync(
        std::make_shared<dist::GradientSync>(group, *model.ptr(), cfg.dist.bucket_mb));
  try {
    result.history = trainer.fit(train_loader, val_loader);
  } catch (const std::exception& e) {  // run.json says how it ended; the error goes on up
    if (main_rank) record_run_failed(result.run_dir, e.what());
    throw;
  }

  if (trainer.stopped_by_signal() != 0) {  // the checkpointer saved this step at fit's end
    result.stopped_by_signal = trainer.stopped_by_signal();
    if (main_rank) result.resume_from = ckpt::resolve_resume("auto", result.run_dir);
    if (group) group->barrier();  // rank 0 serves the store: nobody leaves while others need it
    const std::string stopped = fmt::format("stopped by {} after step {}",
                                            signal_name(result.stopped_by_signal),
                                            trainer.global_step());
    if (world.active())  // every rank says where it stopped: the same step
      log::warn("rank {} of {}: {}", world.rank, world.size, stopped);
    else
      log::info("{}", stopped);
    if (main_rank) log::info("checkpoint of the stop: {}", result.resume_from.string());
    return result;
  }

  if (models::has_lora(*model.ptr())) {  // peft's files, then the merged model (export, eval)
    if (main_rank) ckpt::save_adapter(*model.ptr(), result.run_dir, cfg.model);
    models::merge_lora(*model.ptr());
  }
  const std::map<std::string, std::string> weights_metadata{
      {"format", "pt"}, {"lathe_model", cfg.model.name}, {"lathe_version", LATHE_VERSION}};
  if (main_rank) ckpt::save_weights(*model.ptr(), result.run_dir / "model.safetensors",
                                    weights_metadata);
  if (main_rank && trainer.ema() != nullptr)
    ckpt::save_safetensors(result.run_dir / ckpt::kEmaWeightsFile, trainer.ema()->state(),
                           weights_metadata);
  if (test_loader != nullptr && test_loader->size() > 0) {
    result.test = trainer.test(*test_loader);
    result.test_ema = trainer.validate_ema(*test_loader);
    Metrics logged;
    for (const auto& [k, v] : result.test) logged["test/" + k] = v;
    for (const auto& [k, v] : result.test_ema) logged["test_ema/" + k] = v;
    trainer.log("test", logged);
  }
  if (main_rank) {  // the EMA weights' metrics as ema/<metric>
    Metrics all = result.test;
    for (const auto& [k, v] : result.test_ema) all["ema/" + k] = v;
    write_json(result.run_dir / "test_metrics.json", all);
  }
  if (main_rank && !group && test_loader != nullptr && test_loader->size() > 0)
    write_test_predictions(model, task, *test_loader, device, trainer.config().precision,
                           data.info.classes, result.run_dir / "test_predictions.json");
  if (group) group->barrier();  // rank 0 serves the store: nobody leaves while others need it
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (main_rank) {
    record_run_end(result.run_dir, result.seconds, early_stop_reason(trainer, cfg.trainer));
    try {  // the run is done: a report that cannot be made does not undo it
      write_report(result.run_dir);
    } catch (const Error& e) {
      log::warn("{}/report.html not written: {}", result.run_dir.string(), e.what());
    }
  }
  if (mlflow) {
    const auto& d = result.run_dir;
    mlflow->finish({d / "config.yaml", d / "test_metrics.json", d / "test_predictions.json",
                    d / "report.html", d / "model.onnx"});
    if (!mlflow->run_id().empty())
      record_run_field(d, "mlflow",
                       nlohmann::json{{"tracking_uri", cfg.trainer.mlflow.tracking_uri},
                                      {"experiment_id", mlflow->experiment_id()},
                                      {"run_id", mlflow->run_id()},
                                      {"artifact_uri", mlflow->artifact_uri()}}
                           .dump());
  }
  if (!result.test.empty()) {
    std::string line;
    for (const auto* k : {"accuracy", "f1_macro", "roc_auc", "perplexity", "r2", "rmse", "loss"})
      if (result.test.count(k)) line += fmt::format(" {} {:.4f}", k, result.test.at(k));
    log::info("test:{} ({} records)", line, test_loader->size());
  }
  log::info("wrote {}/{{config.yaml, metrics.jsonl, metrics.csv, tensorboard/, "
            "model.safetensors, {}test_metrics.json, report.html}} in {:.1f}s",
            result.run_dir.string(),
            trainer.ema() != nullptr ? "model_ema.safetensors, " : "", result.seconds);
  return result;
}

std::filesystem::path weights_file(const std::filesystem::path& dir,
                                   const std::filesystem::path& weights) {
  if (weights.empty()) return dir / "model.safetensors";
  if (weights != "ema") return weights;
  const auto file = dir / ckpt::kEmaWeightsFile;
  LATHE_CHECK(std::filesystem::exists(file), CheckpointError,
              "{}: no EMA weights here (--weights ema); the run trained without trainer.ema "
              "(set trainer.ema.decay, e.g. 0.999, to keep them)",
              file.string());
  return file;
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
  if (resume && std::filesystem::exists(jsonl))  // metrics.csv is rebuilt from the JSONL log
    earlier = read_metrics_log(jsonl);
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
  if (const auto est = models::estimator_of(*model.ptr())) {  // its library's own model file
    est->load(weights.empty() ? run_dir / est->file_name() : weights);
    return evaluate(model, Task(cfg.task), *data.test, device, cfg.trainer.precision);
  }
  const auto file = weights_file(run_dir, weights);
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
