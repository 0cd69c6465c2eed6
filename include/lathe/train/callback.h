// The callback interface and lathe's built-in callbacks: progress, metrics.jsonl / metrics.csv,
// TensorBoard, early stopping, learning-rate monitor.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lathe/core/log.h"
#include "lathe/train/metrics.h"

namespace lathe::train {

class Trainer;

/// One batch of logged values: kind is "step" (every log_every_n_steps: train/loss, lr), "val"
/// (each validation: val/...), "epoch" (each epoch's end: train_epoch/... over the whole epoch,
/// the last val/..., lr, time_s), "lr" (the LR monitor) or "test" (test/...).
struct LogEvent {
  std::string kind;
  int64_t epoch = 0;
  int64_t step = 0;
  Metrics values;  ///< "train/loss", "val/accuracy", "lr", ...
};

/// Hooks into the training loop. Override what you need; the Trainer calls them in the order
/// the callbacks were added. Callbacks that keep state across a run (best value, counters)
/// return it from state_json() so checkpoints can restore it.
///
///   struct PrintLoss : lathe::train::Callback {
///     std::string name() const override { return "print_loss"; }
///     void on_log(Trainer&, const LogEvent& e) override { ... }
///   };
class Callback {
 public:
  virtual ~Callback() = default;
  virtual std::string name() const = 0;
  virtual void on_fit_start(Trainer&) {}
  virtual void on_train_epoch_start(Trainer&, int64_t /*epoch*/) {}
  /// After each optimizer step, its log row and any validation due at it; `batch` is the
  /// 0-based index in the epoch of `batches`.
  virtual void on_train_step_end(Trainer&, int64_t /*batch*/, int64_t /*batches*/) {}
  virtual void on_log(Trainer&, const LogEvent&) {}
  virtual void on_validation_end(Trainer&, const Metrics& /*val, keys prefixed val/*/) {}
  virtual void on_train_epoch_end(Trainer&, int64_t /*epoch*/) {}
  virtual void on_fit_end(Trainer&) {}
  virtual std::string state_json() const { return {}; }
  virtual void load_state_json(const std::string&) {}
  /// Why a training step cannot be recorded as a CUDA graph while this callback runs (it
  /// changes during fit what a recorded step would fix once, e.g. which parameters train);
  /// empty when it does not matter.
  virtual std::string blocks_cuda_graphs() const { return {}; }
};

/// Console output: on a terminal a bar per epoch (steps/s, samples/s, ETA, loss, lr); otherwise
/// plain lines (per log step with mode "plain", per epoch always, unless mode is "none").
class ProgressCallback : public Callback {
 public:
  explicit ProgressCallback(std::string mode = "auto");
  std::string name() const override { return "progress"; }
  void on_train_epoch_start(Trainer&, int64_t epoch) override;
  void on_train_step_end(Trainer&, int64_t batch, int64_t batches) override;
  void on_log(Trainer&, const LogEvent&) override;
  void on_train_epoch_end(Trainer&, int64_t epoch) override;

 private:
  std::string mode_;
  std::unique_ptr<log::ProgressBar> bar_;
  std::string postfix_;
  std::chrono::steady_clock::time_point epoch_start_;
  int64_t epoch_samples_ = 0;
};

/// metrics.jsonl: one JSON object per event ({"kind", "epoch", "step", values...}), flushed per
/// line; non-finite values are written as null.
class JsonlLogger : public Callback {
 public:
  explicit JsonlLogger(const std::filesystem::path& file, bool append = false);
  std::string name() const override { return "jsonl"; }
  void on_log(Trainer&, const LogEvent&) override;

 private:
  std::filesystem::path file_;
  std::ofstream out_;
};

/// metrics.csv: one row per event, columns kind, epoch, step and the union of every value's
/// name; rewritten atomically after each epoch and test row and when fitting ends.
class CsvLogger : public Callback {
 public:
  /// `earlier` rows (from a resumed run's metrics.jsonl) come first.
  explicit CsvLogger(std::filesystem::path file, std::vector<LogEvent> earlier = {});
  std::string name() const override { return "csv"; }
  void on_log(Trainer&, const LogEvent&) override;
  void on_fit_end(Trainer&) override { flush(); }
  void flush() const;

 private:
  std::filesystem::path file_;
  std::vector<LogEvent> rows_;
};

/// TensorBoard scalars: an events.out.tfevents.* file (TFRecord framing, masked CRC-32C) in
/// `dir`, one scalar per logged value, tagged by its name ("train/loss", "val/accuracy", "lr").
class TensorBoardLogger : public Callback {
 public:
  explicit TensorBoardLogger(const std::filesystem::path& dir);
  std::string name() const override { return "tensorboard"; }
  void on_log(Trainer&, const LogEvent&) override;
  const std::filesystem::path& file() const { return file_; }

 private:
  void write_record(const std::string& event);
  std::filesystem::path file_;
  std::ofstream out_;
};

/// Stops training when `monitor` (a validation metric, e.g. "val/loss") has not improved by
/// more than min_delta for `patience` validations in a row.
class EarlyStopping : public Callback {
 public:
  /// mode "auto": the monitored metric's direction, asked of the trainer's Task at fit start.
  EarlyStopping(std::string monitor, std::string mode, int64_t patience, double min_delta);
  std::string name() const override { return "early_stopping"; }
  void on_fit_start(Trainer& t) override;
  void on_validation_end(Trainer&, const Metrics& val) override;
  std::string state_json() const override;
  void load_state_json(const std::string& json) override;
  double best() const { return best_; }
  int64_t wait() const { return wait_; }

 private:
  std::string monitor_, mode_;
  int64_t patience_;
  double min_delta_;
  double best_;
  int64_t wait_ = 0;
};

/// Logs each parameter group's learning rate (and momentum / beta1 and weight decay) at every
/// log step as lr/group{i}, momentum/group{i}, weight_decay/group{i}.
class LearningRateMonitor : public Callback {
 public:
  std::string name() const override { return "lr_monitor"; }
  void on_train_step_end(Trainer&, int64_t batch, int64_t batches) override;
};

/// Unfreezes the parameters matching `patterns` when epoch `epoch` starts (fine-tuning: train
/// the head first, then everything). Their optimizer groups must hold them already
/// (optim::GroupRules::include_frozen).
class UnfreezeCallback : public Callback {
 public:
  UnfreezeCallback(int64_t epoch, std::vector<std::string> patterns)
      : epoch_(epoch), patterns_(std::move(patterns)) {}
  std::string name() const override { return "unfreeze"; }
  void on_train_epoch_start(Trainer& t, int64_t epoch) override;
  std::string blocks_cuda_graphs() const override {
    return "model.unfreeze_at_epoch changes which parameters train after the graph would be "
           "recorded (a graph recorded while they are frozen never trains them)";
  }

 private:
  int64_t epoch_;
  std::vector<std::string> patterns_;
};

/// CRC-32C (Castagnoli) as TFRecord frames use it, masked: ((c >> 15) | (c << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t size);

}  // namespace lathe::train
