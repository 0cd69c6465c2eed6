// MLflow tracking (trainer.mlflow): a callback that logs a run's params, metrics, tags and
// artifacts to an MLflow tracking server through its REST API. The server's failures never stop
// training: each call is retried with backoff, then tracking stops with one warning.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lathe/config/config.h"
#include "lathe/train/callback.h"

namespace lathe::run {

/// Logs one lathe run as one MLflow run:
///  - at fit start: the experiment (looked up by name, created when missing), the run
///    (runs/create, named trainer.mlflow.run_name or run.name), `tags`, and the resolved config
///    flattened to dotted keys as params (values cut at MLflow's 6000 characters);
///  - during fit: every logged value as a metric with its step and time, sent in batches
///    (runs/log-batch) after each epoch, validation, test, every 30 s and every 1000 values;
///  - finish(): the artifacts (through the server's mlflow-artifacts proxy, `mlflow server
///    --serve-artifacts`, the default of MLflow 3) and the run's end (runs/update FINISHED).
/// A run destroyed without finish() (training failed) is marked FAILED.
///
///   auto tracker = std::make_shared<lathe::run::MlflowTracker>(cfg.trainer.mlflow, yaml, tags);
///   trainer.add_callback(tracker);  ... fit, test ...
///   tracker->finish({run_dir / "config.yaml", run_dir / "report.html"});
class MlflowTracker : public train::Callback {
 public:
  /// `run_id`: continue that MLflow run (a resumed lathe run) instead of creating one.
  MlflowTracker(config::MlflowSection cfg, std::string run_name, std::string config_yaml,
                std::map<std::string, std::string> tags, std::string run_id = "");
  ~MlflowTracker() override;
  MlflowTracker(const MlflowTracker&) = delete;
  MlflowTracker& operator=(const MlflowTracker&) = delete;

  std::string name() const override { return "mlflow"; }
  void on_fit_start(train::Trainer&) override { begin(); }
  void on_log(train::Trainer&, const train::LogEvent& e) override { log(e); }
  /// Starts (or continues) the MLflow run: what on_fit_start does, for runs without a Trainer
  /// (estimators).
  void begin();
  /// Queues a row's metrics: what on_log does, for runs without a Trainer.
  void log(const train::LogEvent& e);
  void on_fit_end(train::Trainer&) override { flush(); }

  /// Sends what is buffered, uploads `artifacts` that exist (by file name), ends the run.
  void finish(const std::vector<std::filesystem::path>& artifacts);
  /// The MLflow run (empty until started, or when the server never answered).
  const std::string& run_id() const { return run_id_; }
  const std::string& experiment_id() const { return experiment_id_; }
  /// The run's artifact root as the server names it ("mlflow-artifacts:/1/<run id>/artifacts").
  const std::string& artifact_uri() const { return artifact_uri_; }
  /// False once a call failed after its retries (one warning said so; nothing more is sent).
  bool active() const { return active_; }

  /// Sends buffered metrics now (runs/log-batch, at most 1000 a request).
  void flush();

 private:
  void start();
  /// POST/GET/PUT `path` below the tracking URI with retries; the response body, or nullopt
  /// after the warning (tracking then stops). `allow_status` statuses count as answers.
  std::optional<std::string> call(const std::string& method, const std::string& path,
                                  const std::string& body, const std::string& what,
                                  const std::vector<long>& allow_status = {},
                                  long* status = nullptr);
  void give_up(const std::string& what, const std::string& why);

  config::MlflowSection cfg_;
  std::string run_name_, config_yaml_;
  std::map<std::string, std::string> tags_;
  std::string run_id_, experiment_id_, artifact_uri_;
  bool active_ = true, started_ = false, finished_ = false;
  std::string pending_;  ///< JSON metric objects, comma-separated
  size_t pending_count_ = 0;
  std::chrono::steady_clock::time_point last_flush_ = std::chrono::steady_clock::now();
};

/// Uploads `file` as an artifact of the MLflow run a lathe run folder was tracked as (its
/// run.json "mlflow" entry: tracking URI and artifact URI). False when the folder was not
/// tracked, or (with one warning) when the server does not take the file. `lathe export` calls
/// it for model.onnx.
bool log_artifact_to_tracked_run(const std::filesystem::path& run_dir,
                                 const std::filesystem::path& file);

}  // namespace lathe::run
