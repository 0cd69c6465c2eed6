// Trainer: fit / validate / test / predict with accumulation, clipping, mixed precision,
// hyperparameter schedules and callbacks — what Lightning's Trainer is to Python users.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/Device.h>
#include <torch/nn/modules/container/any.h>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/data/tensor_data.h"
#include "lathe/optim/optimizer.h"
#include "lathe/sched/schedule.h"
#include "lathe/train/amp.h"
#include "lathe/train/callback.h"
#include "lathe/train/task.h"

namespace lathe::dist {
class GradientSync;
}

namespace lathe::train {

class CudaGraphStep;
class ModelEma;

/// The hyperparameter schedules of a run; momentum and weight decay are optional.
struct Schedules {
  sched::Schedule lr;
  std::optional<sched::Schedule> momentum;      ///< momentum (sgd, rmsprop) or beta1 (adam[w])
  std::optional<sched::Schedule> weight_decay;  ///< only groups that decay
  sched::Plateau plateau;                       ///< scales lr when lr's schedule is "plateau"
};

/// Builds a run's schedules from its optim section for `total_steps` optimizer steps.
Schedules make_schedules(const config::OptimSection& cfg, int64_t total_steps,
                         int64_t steps_per_epoch);

/// One finished epoch: train and validation metrics, the last learning rate, wall time.
struct EpochRecord {
  int64_t epoch = 0;  ///< 1-based
  int64_t step = 0;   ///< optimizer steps so far
  Metrics train;
  Metrics val;
  double lr = 0;
  double seconds = 0;
};

/// Where a fit stands; everything a checkpoint needs to continue besides model and optimizer.
struct TrainProgress {
  int64_t epoch = 0;           ///< epochs fully finished
  int64_t step = 0;            ///< optimizer steps taken
  int64_t batch_in_epoch = 0;  ///< micro-batches consumed in the current epoch (resume point)
};

/// Everything of a Trainer that changes during fit besides the model's weights, as one value:
/// what a checkpoint holds next to them. The Trainer gives it (state()) and takes it
/// (load_state()); ckpt only serialises it.
struct TrainState {
  TrainProgress progress;
  std::string optimizer;  ///< the optimizer's state in LibTorch's archive format (torch::save)
  GradScaler::State scaler;
  sched::Plateau::State plateau;
  std::map<std::string, std::string> callbacks;  ///< Callback::name() → its state_json()
  /// trainer.ema's averaged weights by state-dict name (on the CPU); empty without it.
  std::vector<std::pair<std::string, at::Tensor>> ema;
};

/// A TrainState that does not fit this Trainer; part() names what: "optimizer", "callbacks"
/// or "ema" (ckpt turns it into the file that held that part).
class StateMismatch : public CheckpointError {
 public:
  StateMismatch(std::string part, const std::string& message)
      : CheckpointError(message), part_(std::move(part)) {}
  const std::string& part() const { return part_; }

 private:
  std::string part_;
};

/// Trains `model` on a Task with the options of a config's trainer section.
///
///   Trainer trainer(cfg.trainer, device, model, Task(cfg.task), optimizer, schedules);
///   trainer.add_callback(std::make_shared<JsonlLogger>("runs/x/metrics.jsonl"));
///   auto history = trainer.fit(train_loader, &val_loader);
///   Metrics test = trainer.test(test_loader);
///
/// Any module whose forward takes one tensor and returns one, over any Dataset, without a
/// config file (the sections' defaults are a config's; examples/custom_model does this whole):
///
///   struct NetImpl : torch::nn::Module {
///     torch::nn::Linear fc{register_module("fc", torch::nn::Linear(4, 3))};
///     at::Tensor forward(const at::Tensor& x) { return fc(x); }  // (B, 4) -> (B, 3)
///   };
///   TORCH_MODULE(Net);
///   Net net;
///   auto opts32 = lathe::data::LoaderOptions().with_batch_size(32).with_shuffle(true);
///   lathe::data::DataLoader train(std::make_shared<MyDataset>(), opts32);
///   lathe::config::OptimSection optim;   // adamw, lr 1e-3
///   lathe::config::TrainerSection opts;  // max_epochs 5, ...
///   auto optimizer = lathe::optim::make_optimizer(optim, *net);
///   lathe::train::Trainer trainer(opts, lathe::select_device("auto"), torch::nn::AnyModule(net),
///                                 lathe::train::Task(),  // classification; or set_loss(...)
///                                 optimizer, make_schedules(optim, 5 * train.num_batches(),
///                                                           train.num_batches()));
///   trainer.fit(train, /*val=*/nullptr);
///
/// The model must already be on `device` (net->to(device)).
class Trainer {
 public:
  Trainer(config::TrainerSection cfg, c10::Device device, torch::nn::AnyModule model, Task task,
          optim::OptimizerBundle& optimizer, Schedules schedules);
  ~Trainer();

  /// Adds a callback; callbacks run in the order added (checkpointers, loggers, your own).
  ///
  ///   trainer.add_callback(std::make_shared<lathe::train::TensorBoardLogger>("runs/x/tb"));
  void add_callback(std::shared_ptr<Callback> callback);
  /// Data-parallel training: `sync` all-reduces the gradients of every optimizer step and the
  /// meters (training, validation, test) are combined over its ranks. Each rank builds the same
  /// model and reads its shard of the data (LoaderOptions::shard / TensorLoader::set_shard):
  ///
  ///   auto group = lathe::dist::ProcessGroup::from_env(device, std::chrono::seconds(60));
  ///   lathe::dist::broadcast_module(*group, *net);  // every rank starts from rank 0's weights
  ///   trainer.set_gradient_sync(std::make_shared<lathe::dist::GradientSync>(group, *net, 25.0));
  void set_gradient_sync(std::shared_ptr<dist::GradientSync> sync) { sync_ = std::move(sync); }
  const std::vector<std::shared_ptr<Callback>>& callbacks() const { return callbacks_; }

  /// Trains until max_epochs or max_steps, early stopping, or request_stop(); validates after
  /// each epoch or every val_every_n_steps when `val` is given. A non-finite loss without a
  /// gradient scaler stops with a TrainError before anything is saved.
  std::vector<EpochRecord> fit(data::BatchSource& train, data::BatchSource* val);
  /// Every metric of the task over `loader` (eval mode, no gradients), keys without prefix.
  Metrics validate(data::BatchSource& loader);
  Metrics test(data::BatchSource& loader) { return validate(loader); }
  /// validate() of the EMA weights (trainer.ema); empty without them. The validation after each
  /// epoch (or val_every_n_steps) reports them as val_ema/<metric>, which can be monitored.
  Metrics validate_ema(data::BatchSource& loader);
  /// trainer.ema's moving average of the weights; null without it.
  ModelEma* ema() { return ema_.get(); }
  /// Model outputs over `loader`, concatenated on the CPU: (N, ...).
  at::Tensor predict(data::BatchSource& loader);

  // What callbacks read and steer.
  int64_t global_step() const { return progress_.step; }
  int64_t epoch() const { return progress_.epoch + 1; }  ///< the epoch in progress, 1-based
  const TrainProgress& progress() const { return progress_; }
  void set_progress(const TrainProgress& p) { progress_ = p; }
  /// The whole training state (optimizer, scaler, plateau, progress, callbacks), copied off
  /// the device: a value that stays valid while training goes on.
  TrainState state();
  /// Continues from `state`: the optimizer's tensors are placed on their parameters' devices
  /// and memory formats (lathe::optim::place_state_like_params). A state that does not fit
  /// this optimizer or these callbacks is a StateMismatch naming the part.
  void load_state(const TrainState& state);
  /// The trainer section as it runs: precision "auto" resolved for the device.
  const config::TrainerSection& config() const { return cfg_; }
  void request_stop(const std::string& reason);
  bool stop_requested() const { return stop_; }
  /// The signal (SIGTERM, SIGINT: lathe::StopSignals) that stopped fit() after a step, or 0.
  /// Data-parallel ranks agree on it after every step (an all-reduce of the flag, MAX), so all
  /// of them stop after the same step; a finished epoch is still validated and logged, an
  /// unfinished one is not (its checkpoint resumes it where it stopped).
  int stopped_by_signal() const { return stopped_by_signal_; }
  void log(const std::string& kind, Metrics values);
  optim::OptimizerBundle& optimizer() { return optimizer_; }
  torch::nn::AnyModule& model() { return model_; }
  const Task& task() const { return task_; }
  GradScaler& scaler() { return scaler_; }
  Schedules& schedules() { return schedules_; }
  double last_lr() const { return lr_; }
  int64_t last_batch_size() const { return last_batch_size_; }
  /// Why this trainer's step cannot be recorded as a CUDA graph (trainer.cuda_graphs), empty
  /// when it can: its config, optimizer, model and callbacks, and what its steps so far showed
  /// (activation checkpointing).
  std::string cuda_graph_blocker() const;
  /// Steps run as replays of the recorded CUDA graph so far (trainer.cuda_graphs; 0 without).
  int64_t cuda_graph_replays() const;
  /// Total optimizer steps this fit will take (max_epochs · steps per epoch, capped by max_steps).
  static int64_t planned_steps(const config::TrainerSection& cfg, int64_t batches_per_epoch);

 private:
  Metrics train_epoch(data::BatchSource& train, data::BatchSource* val);
  void optimizer_step();
  /// trainer.gradient_clip_val / _algorithm on the (unscaled) gradients, on the device.
  void clip_gradients();
  void set_step_hyperparameters();
  /// Stops recording / replaying the step as a CUDA graph, saying why.
  void drop_graph(const std::string& why);
  /// forward, loss, backward and optimizer step of one batch as a replayed CUDA graph:
  /// (output, loss), or undefined tensors when the batch must take the eager path.
  std::pair<at::Tensor, at::Tensor> graphed_step(const at::Tensor& x, const at::Tensor& y);
  void run_validation(data::BatchSource& val);
  /// The stop signal any rank received (lathe::stop_signal()), the same answer on every rank.
  int agreed_stop_signal();
  at::Tensor forward(const at::Tensor& x);
  Metrics compute(Meter& meter);  // over every rank's records when data-parallel

  config::TrainerSection cfg_;
  c10::Device device_;
  torch::nn::AnyModule model_;
  Task task_;
  optim::OptimizerBundle& optimizer_;
  Schedules schedules_;
  GradScaler scaler_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  std::shared_ptr<dist::GradientSync> sync_;
  TrainProgress progress_;
  Metrics last_val_;
  bool stop_ = false;
  std::string stop_reason_;
  double lr_ = 0;
  int64_t last_batch_size_ = 0;
  bool channels_last_ = false;            ///< 4-d inputs go channels-last (the model's weights too)
  std::unique_ptr<CudaGraphStep> graph_;  ///< trainer.cuda_graphs, when the step qualifies
  std::unique_ptr<ModelEma> ema_;         ///< trainer.ema, updated after every optimizer step
  bool recomputes_seen_ = false;          ///< a step ran activation checkpointing
  int stopped_by_signal_ = 0;
};

/// The metrics of a model over every batch of `loader` for `task` (eval mode, no gradients; the
/// module's mode is restored afterwards). With `reduce`, over every rank's shard of the data.
Metrics evaluate(torch::nn::AnyModule& model, const Task& task, data::BatchSource& loader,
                 c10::Device device, const std::string& precision = "32",
                 const MeterReduce* reduce = nullptr);

}  // namespace lathe::train
