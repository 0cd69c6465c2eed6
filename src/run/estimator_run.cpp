// run_estimator: load and split the table, fit the Estimator round by round (metrics, early
// stopping, checkpoints), then the run folder's files as a Trainer run writes them.
#include "src/run/estimator_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/log.h"
#include "lathe/core/runtime.h"
#include "lathe/data/sources.h"
#include "lathe/run/mlflow.h"
#include "lathe/run/report.h"
#include "lathe/run/runs.h"
#include "lathe/train/callback.h"
#include "lathe/train/task.h"
#include "lathe/train/trainer.h"
#include "models/registry.h"
#include "src/run/run_files.h"

namespace lathe::run::detail {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

/// One split as a table: inputs (N, F) float32 and targets (N).
struct Table {
  at::Tensor x, y;
  int64_t size() const { return x.defined() ? x.size(0) : 0; }
};

Table to_table(const std::shared_ptr<const data::Dataset>& split) {
  if (!split || split->size() == 0) return {};
  if (const auto* t = dynamic_cast<const data::TensorSource*>(split.get()))
    return {t->tensors().inputs.to(at::kFloat).reshape({t->size(), -1}), t->tensors().targets};
  std::vector<at::Tensor> xs, ys;
  for (int64_t i = 0; i < split->size(); ++i) {
    const data::Example e = split->get(i);
    xs.push_back(e.input.to(at::kFloat).reshape({-1}));
    ys.push_back(e.target);
  }
  return {at::stack(xs), at::stack(ys)};  // (N, F), (N)
}

/// The task's metrics of outputs against targets (the meters a Trainer run's test uses).
train::Metrics score(const train::Task& task, const at::Tensor& out, const at::Tensor& y) {
  const at::Tensor target =
      task.config().kind == "classification" ? y.to(at::kLong) : y.to(at::kFloat);
  auto meter = task.meter(/*detailed=*/true);
  meter->update(out, target, task.loss(out, target));
  return meter->compute();
}

train::Metrics prefixed(const std::string& prefix, const train::Metrics& m) {
  train::Metrics out;
  for (const auto& [k, v] : m) out[prefix + "/" + k] = v;
  return out;
}

/// metrics.jsonl rows as the Trainer's JsonlLogger writes them (kind, epoch, step, values).
class MetricsLog {
 public:
  MetricsLog(const fs::path& file, bool append, std::shared_ptr<MlflowTracker> mlflow)
      : file_(file), out_(file, append ? std::ios::app : std::ios::trunc), mlflow_(std::move(mlflow)) {
    LATHE_CHECK(out_.is_open(), IoError, "{}: cannot open the metrics log for writing",
                file.string());
  }
  void log(const std::string& kind, int64_t round, const train::Metrics& values) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    j["kind"] = kind;
    j["epoch"] = round;
    j["step"] = round;
    for (const auto& [k, v] : values)
      j[k] = std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr);
    out_ << j.dump() << '\n';
    out_.flush();
    LATHE_CHECK(out_.good(), IoError, "{}: write failed (disk full?)", file_.string());
    if (mlflow_) mlflow_->log({kind, round, round, values});
  }

 private:
  fs::path file_;
  std::ofstream out_;
  std::shared_ptr<MlflowTracker> mlflow_;
};

/// Early stopping over rounds: the monitor's best value, its round and the rounds since.
struct Stopper {
  std::string monitor;
  bool higher = false;
  int64_t patience = 0;
  double min_delta = 0;
  double best = NAN;
  int64_t best_round = 0, wait = 0;

  /// Records a round's value; false when patience ran out.
  bool update(double value, int64_t round) {
    const bool better = std::isnan(best) ||
                        (higher ? value > best + min_delta : value < best - min_delta);
    if (better) {
      best = value;
      best_round = round;
      wait = 0;
      return true;
    }
    return ++wait < patience;
  }
};

std::string round_name(int64_t round) { return fmt::format("round-{:06d}", round); }

/// checkpoints/round-NNNNNN/{model file, state.json}, keeping the newest `keep_last`.
void write_checkpoint(const fs::path& run_dir, const models::Estimator& est, int64_t round,
                      const Stopper& stop, int64_t keep_last) {
  const fs::path root = run_dir / "checkpoints";
  const fs::path dir = root / round_name(round);
  fs::create_directories(dir);
  est.save(dir / est.file_name());
  json state = {{"round", round}, {"best_round", stop.best_round}, {"wait", stop.wait},
                {"best", std::isnan(stop.best) ? json(nullptr) : json(stop.best)}};
  write_file_atomic(dir / "state.json", state.dump(2) + "\n");
  std::vector<fs::path> rounds;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().rfind("round-", 0) == 0)
      rounds.push_back(e.path());
  std::sort(rounds.begin(), rounds.end());
  const auto keep = static_cast<size_t>(std::max<int64_t>(1, keep_last));
  for (size_t i = 0; i + keep < rounds.size(); ++i) fs::remove_all(rounds[i]);
}

}  // namespace

fs::path resolve_estimator_resume(const std::string& spec, const fs::path& run_dir) {
  const fs::path given = spec == "auto" ? run_dir : fs::path(spec);
  if (fs::exists(given / "state.json")) return given;
  std::vector<fs::path> rounds;
  if (fs::is_directory(given / "checkpoints"))
    for (const auto& e : fs::directory_iterator(given / "checkpoints"))
      if (e.is_directory() && e.path().filename().string().rfind("round-", 0) == 0 &&
          fs::exists(e.path() / "state.json"))
        rounds.push_back(e.path());
  LATHE_CHECK(!rounds.empty(), CheckpointError,
              "--resume {}: no boosting checkpoint in {} (checkpoints/round-*/state.json); "
              "start the run without --resume",
              spec, (given / "checkpoints").string());
  return *std::max_element(rounds.begin(), rounds.end());
}

RunResult run_estimator(config::RunConfig cfg, const std::string& resume) {
  const auto t0 = std::chrono::steady_clock::now();
  LATHE_CHECK(cfg.data.source == "csv", ConfigError,
              "{}: model.name = {} fits tables: set data.source: csv (this run's is {})",
              cfg.model.name_where, cfg.model.name, cfg.data.source);
  setup_threads(cfg.run.threads);
  seed_everything(cfg.run.seed);
  RunResult result;
  result.run_dir = cfg.run_dir();
  fs::create_directories(result.run_dir);
  log::info("run {} → {} (model {}, fitted by its library on the CPU, seed {})", cfg.run.name,
            result.run_dir.string(), cfg.model.name, cfg.run.seed);

  const data::DataSplits splits = [&] {
    const Doing doing(fmt::format("loading the {} data at {}", cfg.data.source, cfg.data.path));
    return data::load_splits(cfg.data, cfg.run.seed);
  }();
  const Table train = to_table(splits.train), val = to_table(splits.val), test = to_table(splits.test);
  log::info("data: {} train / {} val / {} test records from {}", train.size(), val.size(),
            test.size(), cfg.data.path);
  RunLoaders described;
  described.info = splits.info;
  for (const auto& line : resolve_from_data(cfg, described)) log::info("{}", line);
  const config::DataInfo& info = splits.info;
  LATHE_CHECK(train.size() > 0, DataError, "{}: the training split is empty", cfg.data.path);

  if (!splits.preprocessing_json.empty())
    write_file_atomic(result.run_dir / "preprocessing.json", splits.preprocessing_json);
  if (!info.classes.empty())
    write_file_atomic(result.run_dir / "classes.txt",
                      fmt::format("{}\n", fmt::join(info.classes, "\n")));
  const std::string config_yaml = config::to_yaml(cfg);
  write_file_atomic(result.run_dir / "config.yaml", config_yaml);
  const fs::path resume_from =
      resume.empty() ? fs::path() : resolve_estimator_resume(resume, result.run_dir);
  record_run_start(result.run_dir, resume_from.string());

  const std::shared_ptr<models::Estimator> est = models::make_estimator(cfg.model);
  models::FitTask fit;
  fit.kind = info.task;
  fit.num_classes = static_cast<int64_t>(info.classes.size());
  fit.class_weights = cfg.task.class_weights;
  fit.loss = cfg.task.loss;
  fit.seed = cfg.run.seed;
  fit.threads = cfg.run.threads;
  LATHE_CHECK(fit.class_weights.empty() || static_cast<int64_t>(fit.class_weights.size()) ==
                                               fit.num_classes,
              ConfigError, "{}: task.class_weights has {} weights, but the data has {}",
              cfg.source, fit.class_weights.size(), info.classes_text());
  const train::Task task(cfg.task);

  Stopper stop;
  const auto& es = cfg.trainer.early_stopping;
  if (!es.monitor.empty()) {
    stop.monitor = es.monitor;
    stop.higher = es.mode == "auto" ? task.higher_is_better(es.monitor) : es.mode == "max";
    stop.patience = es.patience;
    stop.min_delta = es.min_delta;
    LATHE_CHECK(es.monitor.rfind("val/", 0) == 0 && val.size() > 0, ConfigError,
                "{}: trainer.early_stopping.monitor = {}: boosting stops on a validation metric "
                "(val/...), and needs a validation split (data.val_fraction > 0)",
                cfg.source, es.monitor);
  }
  if (!resume_from.empty()) {
    est->load(resume_from / est->file_name());
    const auto state = json::parse(read_text(resume_from / "state.json"), nullptr, false);
    LATHE_CHECK(state.is_object() && state.contains("round") && state["round"].is_number_integer(),
                CheckpointError, "{}: not a boosting checkpoint's state (no integer 'round')",
                (resume_from / "state.json").string());
    stop.best_round = state.value("best_round", int64_t{0});
    stop.wait = state.value("wait", int64_t{0});
    stop.best = state["best"].is_number() ? state["best"].get<double>() : NAN;
    truncate_metrics_log(result.run_dir / "metrics.jsonl", state["round"].get<int64_t>());
    log::info("resuming from {} (round {})", resume_from.string(), est->rounds());
  }

  std::shared_ptr<MlflowTracker> mlflow;
  if (!cfg.trainer.mlflow.tracking_uri.empty()) {
    const char* user = std::getenv("USER");
    const auto& m = cfg.trainer.mlflow;
    mlflow = std::make_shared<MlflowTracker>(
        m, m.run_name.empty() ? cfg.run.name : m.run_name, config_yaml,
        std::map<std::string, std::string>{
            {"mlflow.source.name", cfg.source}, {"mlflow.source.type", "LOCAL"},
            {"mlflow.user", user != nullptr ? user : ""}, {"lathe.version", LATHE_VERSION},
            {"lathe.model", cfg.model.name}, {"lathe.task", cfg.task.kind},
            {"lathe.data", cfg.data.source + ":" + cfg.data.path},
            {"lathe.run_dir", fs::absolute(result.run_dir).string()}});
    mlflow->begin();
  }
  MetricsLog metrics(result.run_dir / "metrics.jsonl", !resume_from.empty(), mlflow);

  // After each round (or the one fit of a forest or SVM): train and validation metrics, early
  // stopping, checkpoints.
  std::string stopped_early;
  auto round_t0 = std::chrono::steady_clock::now();
  const auto after_round = [&](int64_t round) {
    train::EpochRecord rec;
    rec.epoch = round;
    rec.step = round;
    rec.train = score(task, est->predict(train.x), train.y);
    if (val.size() > 0) rec.val = prefixed("val", score(task, est->predict(val.x), val.y));
    const auto now = std::chrono::steady_clock::now();
    rec.seconds = std::chrono::duration<double>(now - round_t0).count();
    round_t0 = now;
    if (!rec.val.empty()) metrics.log("val", round, rec.val);
    train::Metrics row = prefixed("train_epoch", rec.train);
    for (const auto& [k, v] : rec.val) row[k] = v;
    row["time_s"] = rec.seconds;
    metrics.log("epoch", round, row);
    result.history.push_back(rec);
    bool go_on = true;
    if (!stop.monitor.empty()) {
      const auto it = rec.val.find(stop.monitor);
      if (it == rec.val.end()) {
        std::vector<std::string> names;
        for (const auto& [k, v] : rec.val) names.push_back(k);
        throw ConfigError(fmt::format(
            "{}: trainer.early_stopping.monitor = {} is not a validation metric of this run (it "
            "has {})",
            cfg.source, stop.monitor, fmt::join(names, ", ")));
      }
      go_on = stop.update(it->second, round);
      if (!go_on)
        stopped_early = fmt::format("early stopping: {} no better than {:.6g} (round {}) for {} "
                                    "rounds",
                                    stop.monitor, stop.best, stop.best_round, stop.wait);
    }
    const int64_t every = cfg.checkpoint.every_n_epochs;
    if (est->planned_rounds() > 0 && every > 0 && (round % every == 0 || !go_on))
      write_checkpoint(result.run_dir, *est, round, stop, cfg.checkpoint.keep_last);
    return go_on;
  };
  try {
    const Doing doing(fmt::format("fitting {} on {} records", cfg.model.name, train.size()));
    est->fit(train.x, train.y, fit, after_round);
    if (result.history.empty()) after_round(1);  // fitted in one step (SVM): one row of metrics
  } catch (const std::exception& e) {
    record_run_failed(result.run_dir, e.what());
    throw;
  }
  if (!stopped_early.empty()) {
    log::info("{}; keeping the first {} rounds", stopped_early, stop.best_round);
    est->keep_rounds(stop.best_round);
  }
  const fs::path model_file = result.run_dir / est->file_name();
  est->save(model_file);
  const std::vector<double> importance = est->feature_importance(info.num_features);
  if (!importance.empty()) {
    json features = json::array();
    for (size_t i = 0; i < importance.size(); ++i)
      features.push_back({{"name", i < info.feature_names.size() ? info.feature_names[i]
                                                                  : fmt::format("f{}", i)},
                          {"importance", importance[i]}});
    write_file_atomic(result.run_dir / "feature_importance.json",
                      json{{"importance_type", "total_gain"}, {"features", features}}.dump(2) + "\n");
  }

  train::Metrics all;
  if (test.size() > 0) {
    const at::Tensor out = est->predict(test.x);
    result.test = score(task, out, test.y);
    metrics.log("test", est->rounds(), prefixed("test", result.test));
    write_test_predictions(out, test.y, task.config().kind, info.classes,
                           result.run_dir / "test_predictions.json");
    all = result.test;
  }
  {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (const auto& [k, v] : all) j[k] = v;
    write_file_atomic(result.run_dir / "test_metrics.json", j.dump(2) + "\n");
  }
  if (cfg.trainer.csv)  // metrics.csv: the JSONL log's rows as columns, as a Trainer run's
    train::CsvLogger(result.run_dir / "metrics.csv", read_metrics_log(result.run_dir / "metrics.jsonl"))
        .flush();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  record_run_end(result.run_dir, result.seconds, stopped_early);
  try {  // the run is done: a report that cannot be made does not undo it
    write_report(result.run_dir);
  } catch (const Error& e) {
    log::warn("{}/report.html not written: {}", result.run_dir.string(), e.what());
  }
  if (mlflow) {
    const auto& d = result.run_dir;
    mlflow->finish({d / "config.yaml", d / "test_metrics.json", d / "test_predictions.json",
                    d / "report.html", model_file});
    if (!mlflow->run_id().empty())
      record_run_field(d, "mlflow",
                       json{{"tracking_uri", cfg.trainer.mlflow.tracking_uri},
                            {"experiment_id", mlflow->experiment_id()},
                            {"run_id", mlflow->run_id()},
                            {"artifact_uri", mlflow->artifact_uri()}}
                           .dump());
  }
  if (!result.test.empty()) {
    std::string line;
    for (const auto* k : {"accuracy", "f1_macro", "roc_auc", "r2", "rmse", "loss"})
      if (result.test.count(k)) line += fmt::format(" {} {:.4f}", k, result.test.at(k));
    log::info("test:{} ({} records)", line, test.size());
  }
  log::info("wrote {}/{{config.yaml, metrics.jsonl, {}, test_metrics.json, report.html}} in {:.1f}s",
            result.run_dir.string(), est->file_name(), result.seconds);
  return result;
}

}  // namespace lathe::run::detail
