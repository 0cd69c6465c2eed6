// Trainer: the loop — forward under autocast, task loss, scaled backward, accumulation, clipping,
// scheduled hyperparameters, optimizer step — with validation, logging and callbacks.
#include "lathe/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize.h>

#include <sstream>

#include "lathe/core/error.h"
#include "lathe/core/gpu.h"
#include "lathe/core/signals.h"
#include "lathe/core/log.h"
#include "lathe/data/device_feed.h"
#include "lathe/optim/clip.h"
#include "lathe/optim/fused_adamw.h"
#include "lathe/train/cuda_graph.h"
#include "lathe/train/ema.h"
#include "lathe/dist/grad_sync.h"
#include "lathe/dist/process_group.h"
#include "models/checkpoint.h"
#include "models/regularized.h"
#include "models/registry.h"

namespace lathe::train {
namespace {

Metrics prefixed(const std::string& prefix, const Metrics& m) {
  Metrics out;
  for (const auto& [k, v] : m) out[prefix + "/" + k] = v;
  return out;
}

void check_finite(double loss, int64_t epoch, int64_t step) {
  LATHE_CHECK(std::isfinite(loss), TrainError,
              "non-finite training loss ({}) at epoch {}, step {}: training stopped and no "
              "weights were saved; lower optim.lr, check the inputs for NaN/inf, add warmup, or "
              "use trainer.precision=fp16's scaler, which skips such steps",
              loss, epoch, step);
}

c10::ScalarType autocast_dtype(const std::string& precision) {
  return precision == "fp16" ? at::kHalf : at::kBFloat16;
}

config::TrainerSection resolved(config::TrainerSection cfg, c10::Device device) {
  cfg.precision = resolve_precision(cfg.precision, device);
  return cfg;
}

/// The modules whose 4-d weights train channels-last. trainer.channels_last: true = the whole
/// model; auto = on CUDA the whole model when it has convolution (4-d) weights, on the CPU the zoo
/// parts measured to gain from it (models::channels_last_parts_on_cpu); false = none.
std::vector<std::shared_ptr<torch::nn::Module>> channels_last_parts(const std::string& setting,
                                                                   c10::Device device,
                                                                   torch::nn::Module& m) {
  if (setting == "false") return {};
  if (setting == "auto" && !device.is_cuda()) return models::channels_last_parts_on_cpu(m);
  if (setting == "auto") {
    const auto params = m.parameters();
    if (std::none_of(params.begin(), params.end(), [](const auto& p) { return p.dim() == 4; }))
      return {};
  }
  return {m.shared_from_this()};
}

}  // namespace

Schedules make_schedules(const config::OptimSection& cfg, int64_t total_steps,
                         int64_t steps_per_epoch) {
  Schedules s;
  s.lr = sched::Schedule(cfg.schedule, cfg.lr, total_steps, steps_per_epoch);
  if (cfg.momentum_schedule.name != "none") {
    const double base = cfg.name == "adam" || cfg.name == "adamw" ? cfg.betas[0] : cfg.momentum;
    s.momentum = sched::Schedule(cfg.momentum_schedule, base, total_steps, steps_per_epoch);
  }
  if (cfg.weight_decay_schedule.name != "none")
    s.weight_decay =
        sched::Schedule(cfg.weight_decay_schedule, cfg.weight_decay, total_steps, steps_per_epoch);
  s.plateau = sched::Plateau(cfg.schedule);
  return s;
}

int64_t Trainer::planned_steps(const config::TrainerSection& cfg, int64_t batches_per_epoch) {
  const int64_t per_epoch =
      (batches_per_epoch + cfg.accumulate_grad_batches - 1) / cfg.accumulate_grad_batches;
  const int64_t total = cfg.max_epochs * per_epoch;
  return cfg.max_steps > 0 ? std::min(total, cfg.max_steps) : total;
}

Trainer::Trainer(config::TrainerSection cfg, c10::Device device, torch::nn::AnyModule model,
                 Task task, optim::OptimizerBundle& optimizer, Schedules schedules)
    : cfg_(resolved(std::move(cfg), device)),
      device_(device),
      model_(std::move(model)),
      task_(std::move(task)),
      optimizer_(optimizer),
      schedules_(std::move(schedules)),
      scaler_(cfg_.precision == "fp16") {
  // float32 matmuls: TF32 on CUDA for precision 32 unless deterministic (a process setting).
  at::globalContext().setFloat32MatmulPrecision(resolve_matmul_precision(
      cfg_.matmul_precision, cfg_.precision, at::globalContext().deterministicAlgorithms(),
      device_));
  const auto nhwc_parts = channels_last_parts(cfg_.channels_last, device_, *model_.ptr());
  channels_last_ = !nhwc_parts.empty();  // batches too, so the first convolution needs no copy
  for (const auto& part : nhwc_parts) {  // the weights, so convolutions run NHWC without copies
    torch::NoGradGuard no_grad;
    for (auto& p : part->parameters())
      if (p.dim() == 4)  // to(): a one-input-channel weight keeps NCHW strides under contiguous()
        p.set_data(p.data().to(p.options(), /*non_blocking=*/false, /*copy=*/false,
                               at::MemoryFormat::ChannelsLast));
  }
  // The average starts from the weights as they are now (pretrained, broadcast from rank 0).
  if (cfg_.ema.enabled()) ema_ = std::make_unique<ModelEma>(cfg_.ema, *model_.ptr());
}

Trainer::~Trainer() = default;

TrainState Trainer::state() {
  TrainState s;
  s.progress = progress_;
  auto& opt = *optimizer_.optimizer;
  // Steps skipped on the device (fp16's inf/NaN) are counted on the host once, here.
  if (auto* fused = dynamic_cast<optim::FusedAdamW*>(&opt)) fused->sync_host_steps();
  std::ostringstream bytes;
  torch::save(opt, bytes);
  s.optimizer = bytes.str();
  s.scaler = scaler_.state();
  s.plateau = schedules_.plateau.state();
  for (const auto& cb : callbacks_)
    if (std::string st = cb->state_json(); !st.empty()) s.callbacks[cb->name()] = std::move(st);
  if (ema_) s.ema = ema_->state();
  return s;
}

void Trainer::load_state(const TrainState& s) {
  auto& opt = *optimizer_.optimizer;
  try {
    std::istringstream bytes(s.optimizer);
    torch::load(opt, bytes);
  } catch (const c10::Error& e) {
    throw StateMismatch("optimizer", fmt::format(
        "cannot restore the optimizer (truncated, or written for other parameters or another "
        "optimizer than optim.name = {}): {}",
        optimizer_.kind, e.what_without_backtrace()));
  }
  // LibTorch restores each state tensor where it was saved (cuda:0, the CPU) and contiguous.
  optim::place_state_like_params(opt);
  if (ema_ && s.ema.empty())
    throw StateMismatch("ema",
                        "holds no EMA weights, but trainer.ema is on: resume with the "
                        "trainer.ema the run started with (or start a new run)");
  if (ema_) {
    try {
      ema_->load_state(s.ema);
    } catch (const std::invalid_argument& e) {
      throw StateMismatch("ema", fmt::format("cannot restore the EMA weights: {}", e.what()));
    }
  } else if (!s.ema.empty()) {
    log::warn("the checkpoint's EMA weights are not used: trainer.ema is off in this run");
  }
  progress_ = s.progress;
  scaler_.set_state(s.scaler);
  schedules_.plateau.set_state(s.plateau);
  for (auto& cb : callbacks_) {
    const auto it = s.callbacks.find(cb->name());
    if (it == s.callbacks.end()) continue;
    try {
      cb->load_state_json(it->second);
    } catch (const std::exception& e) {
      throw StateMismatch("callbacks", fmt::format("cannot restore the state of callback '{}': {}",
                                                   cb->name(), e.what()));
    }
  }
}

void Trainer::add_callback(std::shared_ptr<Callback> callback) {
  callbacks_.push_back(std::move(callback));
}

void Trainer::request_stop(const std::string& reason) {
  if (!stop_) log::info("{}", reason);
  stop_ = true;
  stop_reason_ = reason;
}

void Trainer::log(const std::string& kind, Metrics values) {
  const LogEvent e{kind, epoch(), progress_.step, std::move(values)};
  for (auto& cb : callbacks_) cb->on_log(*this, e);
}

at::Tensor Trainer::forward(const at::Tensor& x) {
  AutocastGuard amp(device_.type(), autocast_dtype(cfg_.precision), cfg_.precision != "32");
  return model_.forward<at::Tensor>(x);
}

Metrics Trainer::compute(Meter& meter) {
  if (sync_) meter.reduce(sync_->meter_reduce());
  return meter.compute();
}

void Trainer::set_step_hyperparameters() {
  const int64_t step = progress_.step;
  lr_ = schedules_.lr.value_at(step) * schedules_.plateau.scale();
  const double momentum = schedules_.momentum ? schedules_.momentum->value_at(step) : NAN;
  const double wd = schedules_.weight_decay ? schedules_.weight_decay->value_at(step) : NAN;
  optim::set_hyperparameters(optimizer_, lr_, momentum, wd);
  if (auto* fused = dynamic_cast<optim::FusedAdamW*>(optimizer_.optimizer.get()))
    fused->sync_hyperparameters();  // device-side lr in capturable mode
}

std::string Trainer::cuda_graph_blocker() const {
  GraphStepTraits t;
  t.distributed = sync_ != nullptr;
  t.accumulate_grad_batches = cfg_.accumulate_grad_batches;
  t.fp16_scaler = scaler_.enabled();
  t.fused_adamw = dynamic_cast<optim::FusedAdamW*>(optimizer_.optimizer.get()) != nullptr;
  t.scheduled_momentum_or_decay = schedules_.momentum || schedules_.weight_decay;
  t.weight_penalty = models::penalty_of(*model_.ptr()).defined();
  t.recomputes = recomputes_seen_;
  for (const auto& cb : callbacks_)
    if (t.callback.empty()) t.callback = cb->blocks_cuda_graphs();
  return train::cuda_graph_blocker(t, device_);
}

int64_t Trainer::cuda_graph_replays() const { return graph_ ? graph_->replays() : 0; }

void Trainer::drop_graph(const std::string& why) {
  log::warn("trainer.cuda_graphs: {}; training eagerly from step {}", why, progress_.step);
  graph_.reset();
  if (auto* fused = dynamic_cast<optim::FusedAdamW*>(optimizer_.optimizer.get())) {
    fused->freeze_state(false);
    fused->set_capturable(false);
  }
}

std::pair<at::Tensor, at::Tensor> Trainer::graphed_step(const at::Tensor& x, const at::Tensor& y) {
  auto& opt = static_cast<optim::FusedAdamW&>(*optimizer_.optimizer);
  set_step_hyperparameters();
  const int64_t recomputed = models::checkpointed_calls();
  const auto r = graph_->run(x, y, [&](const at::Tensor& xs, const at::Tensor& ys) {
    const at::Tensor out = forward(xs);
    const at::Tensor loss = task_.loss(out, ys);  // () mean over the batch
    loss.backward();
    clip_gradients();
    opt.step();
    return std::make_pair(out.detach(), loss.detach());
  });
  switch (r.mode) {
    case GraphMode::Replayed:
      opt.count_replayed_step();
      return {r.output, r.loss};
    case GraphMode::Failed:  // nothing ran: the step is taken eagerly by the caller
      opt.zero_grad(/*set_to_none=*/true);
      drop_graph(fmt::format("recording the step failed ({})", r.error));
      return {};
    case GraphMode::Captured:
      opt.zero_grad(/*set_to_none=*/true);
      return {r.output, r.loss};
    case GraphMode::Eager:
      break;
  }
  opt.zero_grad(/*set_to_none=*/true);
  if (models::checkpointed_calls() != recomputed) recomputes_seen_ = true;
  if (!graph_->captured()) {  // a warm-up step: what it showed may rule the graph out
    if (const std::string why = cuda_graph_blocker(); !why.empty()) drop_graph(why);
  } else if (graph_->fallbacks() == 1) {
    log::warn(
        "trainer.cuda_graphs: a batch of shape {} differs from the recorded one; such batches "
        "run eagerly",
        x.sizes());
  }
  return {r.output, r.loss};
}

void Trainer::clip_gradients() {
  if (cfg_.gradient_clip_val <= 0) return;
  auto& opt = *optimizer_.optimizer;
  scaler_.unscale(opt);  // clip the true gradients, not the scaled ones
  std::vector<at::Tensor> params;
  for (auto& g : opt.param_groups())
    for (auto& p : g.params()) params.push_back(p);
  // On the device, no .item(): the host queues the next step without waiting, and a recorded
  // (CUDA graph) step can include it.
  if (cfg_.gradient_clip_algorithm == "value")
    optim::clip_grad_value(params, cfg_.gradient_clip_val);
  else
    optim::clip_grad_norm(params, cfg_.gradient_clip_val);
}

void Trainer::optimizer_step() {
  if (sync_) sync_->before_step();  // the mean gradient over ranks, before unscale and clip
  set_step_hyperparameters();
  auto& opt = *optimizer_.optimizer;
  clip_gradients();
  scaler_.step(opt);
  scaler_.update();
  opt.zero_grad(/*set_to_none=*/true);
  ++progress_.step;
  if (ema_) ema_->update(progress_.step);
}

int Trainer::agreed_stop_signal() {
  const int mine = stop_signal();
  if (!sync_) return mine;
  return static_cast<int>(sync_->group().max_over_ranks(mine));  // each rank: the same answer
}

void Trainer::run_validation(data::BatchSource& val) {
  last_val_ = prefixed("val", validate(val));
  for (const auto& [k, v] : prefixed("val_ema", validate_ema(val))) last_val_[k] = v;
  log("val", last_val_);
  if (schedules_.lr.spec().name == "plateau") {
    const auto& monitor = schedules_.lr.spec().monitor;
    const auto it = last_val_.find(monitor);
    LATHE_CHECK(it != last_val_.end(), ConfigError,
                "optim.schedule.monitor: '{}' is not a validation metric of this task", monitor);
    if (schedules_.plateau.observe(it->second))
      log::info("plateau: {} stalled, learning rate scaled to {:.3g}x", monitor,
                schedules_.plateau.scale());
  }
  for (auto& cb : callbacks_) cb->on_validation_end(*this, last_val_);
}

Metrics Trainer::train_epoch(data::BatchSource& train, data::BatchSource* val) {
  auto& module = *model_.ptr();
  module.train(true);
  const int64_t epoch = progress_.epoch + 1;
  train.set_epoch(progress_.epoch);
  auto meter = task_.meter(/*detailed=*/false);
  // train/loss of a step row: the batches' losses since the last row, weighted by batch size,
  // summed on the device (three small ops a step; the epoch meter has the full metrics).
  at::Tensor window_loss;
  int64_t window_records = 0;
  for (auto& cb : callbacks_) cb->on_train_epoch_start(*this, epoch);

  const int64_t n = train.num_batches();
  const int64_t accumulate = cfg_.accumulate_grad_batches;
  reset_peak_memory(device_);
  // On CUDA the next batch is copied on a side stream while this one computes.
  data::DeviceFeed feed(train, device_, progress_.batch_in_epoch, channels_last_);
  for (int64_t i = progress_.batch_in_epoch; i < n && !stop_; ++i) {
    const data::Batch batch = feed.next();
    const at::Tensor& x = batch.inputs;
    const at::Tensor& y = batch.targets;
    last_batch_size_ = batch.size();
    at::Tensor out, loss;                                  // loss: () mean over the micro-batch
    if (graph_) std::tie(out, loss) = graphed_step(x, y);  // a whole optimizer step, or nothing
    const bool graphed = out.defined();
    const int64_t recomputed = models::checkpointed_calls();
    if (!graphed) {
      out = forward(x);
      loss = task_.loss(out, y);
    }
    meter->update(out, y, loss);
    const at::Tensor weighted = loss.detach().to(at::kDouble) * static_cast<double>(batch.size());
    window_loss = window_loss.defined() ? window_loss + weighted : weighted;
    window_records += batch.size();
    progress_.batch_in_epoch = i + 1;
    if (graphed) {
      ++progress_.step;
      if (ema_) ema_->update(progress_.step);
    } else {
      // Each micro-batch contributes 1/accumulate of a step; the last, partial group of an epoch
      // is scaled by its own size so its gradient is a mean too.
      const int64_t group_start = (i / accumulate) * accumulate;
      const int64_t group_size = std::min(accumulate, n - group_start);
      // A Regularized model (lasso, ridge) adds its weight penalty to what is minimised; the
      // logged loss stays the task's.
      const at::Tensor penalty = models::penalty_of(module);
      const at::Tensor objective = penalty.defined() ? loss + penalty : loss;
      if (sync_) sync_->before_backward(/*sync=*/i + 1 - group_start == group_size);
      scaler_.scale(group_size == 1 ? objective : objective / static_cast<double>(group_size))
          .backward();
      if (models::checkpointed_calls() != recomputed) recomputes_seen_ = true;
      if (i + 1 - group_start < group_size) continue;
      optimizer_step();
    }
    if (progress_.step % cfg_.log_every_n_steps == 0 || i + 1 == n) {
      // A device sync, once per log interval.
      const double w = window_loss.item<double>() / static_cast<double>(window_records);
      if (!scaler_.enabled()) check_finite(w, epoch, progress_.step);
      Metrics values{{"train/loss", w}, {"lr", lr_}};
      if (scaler_.enabled()) {
        values["amp/scale"] = scaler_.state().scale;
        values["amp/skipped_steps"] = static_cast<double>(scaler_.skipped_steps());
      }
      log("step", values);
      window_loss = at::Tensor();
      window_records = 0;
    }
    if (val != nullptr && cfg_.val_every_n_steps > 0 &&
        progress_.step % cfg_.val_every_n_steps == 0) {
      run_validation(*val);
      module.train(true);
    }
    // Last, so that a checkpoint written here already knows this step's logs and validation.
    for (auto& cb : callbacks_) cb->on_train_step_end(*this, i, n);
    if (cfg_.max_steps > 0 && progress_.step >= cfg_.max_steps)
      request_stop(fmt::format("reached trainer.max_steps = {}", cfg_.max_steps));
    if (const int sig = agreed_stop_signal(); sig != 0) {
      stopped_by_signal_ = sig;
      request_stop(fmt::format("{} received: stopped after step {}", signal_name(sig),
                               progress_.step));
    }
  }
  return compute(*meter);
}

std::vector<EpochRecord> Trainer::fit(data::BatchSource& train, data::BatchSource* val) {
  if (val != nullptr && val->size() == 0) val = nullptr;
  optimizer_.optimizer->zero_grad(/*set_to_none=*/true);
  if (cfg_.cuda_graphs && !graph_) {
    const std::string why = cuda_graph_blocker();
    if (why.empty()) {
      graph_ = std::make_unique<CudaGraphStep>();
      auto& fused = static_cast<optim::FusedAdamW&>(*optimizer_.optimizer);
      fused.set_capturable(true);
      // What the recorded step reads must exist before recording: a tensor first made inside
      // it would be made again — zeroed — by every replay.
      graph_->set_before_capture([&fused] {
        fused.init_state();
        fused.sync_hyperparameters();
        fused.freeze_state(true);
      });
    } else {
      log::warn("trainer.cuda_graphs: {}; training eagerly", why);
    }
  }
  if (schedules_.lr.spec().name == "plateau") {
    // The direction comes from the monitored metric (the Task's table or a user Metric); an
    // unknown monitor is an error now, not after the first epoch.
    const auto& spec = schedules_.lr.spec();
    const bool higher = task_.higher_is_better(spec.monitor);
    if (spec.mode == "auto") schedules_.plateau.set_maximize(higher);
  }
  for (auto& cb : callbacks_) cb->on_fit_start(*this);
  std::vector<EpochRecord> history;
  while (progress_.epoch < cfg_.max_epochs && !stop_) {
    const auto t0 = std::chrono::steady_clock::now();
    EpochRecord rec;
    rec.epoch = progress_.epoch + 1;
    rec.train = train_epoch(train, val);
    const bool finished_epoch = progress_.batch_in_epoch >= train.num_batches();
    if (stopped_by_signal_ != 0 && !finished_epoch) break;  // its checkpoint continues the epoch
    if (!scaler_.enabled() && rec.train.count("loss"))
      check_finite(rec.train.at("loss"), rec.epoch, progress_.step);
    if (val != nullptr && cfg_.val_every_n_steps == 0) run_validation(*val);
    if (val != nullptr) rec.val = last_val_;
    rec.step = progress_.step;
    rec.lr = lr_;
    rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // Epoch-level training metrics get their own names: train/loss is the per-log-step value.
    Metrics row = prefixed("train_epoch", rec.train);
    for (const auto& [k, v] : rec.val) row[k] = v;
    row["lr"] = rec.lr;
    row["time_s"] = rec.seconds;
    if (device_.is_cuda())
      row["gpu/peak_memory_gib"] = static_cast<double>(peak_memory_bytes(device_)) / (1 << 30);
    log("epoch", row);
    if (finished_epoch) {
      ++progress_.epoch;
      progress_.batch_in_epoch = 0;
    }
    for (auto& cb : callbacks_) cb->on_train_epoch_end(*this, rec.epoch);
    history.push_back(std::move(rec));
  }
  for (auto& cb : callbacks_) cb->on_fit_end(*this);
  return history;
}

Metrics evaluate(torch::nn::AnyModule& model, const Task& task, data::BatchSource& loader,
                 c10::Device device, const std::string& precision_setting,
                 const MeterReduce* reduce) {
  const std::string precision = resolve_precision(precision_setting, device);
  auto& module = *model.ptr();
  const bool was_training = module.is_training();
  module.eval();
  torch::NoGradGuard no_grad;
  auto meter = task.meter(/*detailed=*/true);
  data::DeviceFeed feed(loader, device, 0);  // on CUDA the next batch is copied meanwhile
  for (int64_t i = 0; i < loader.num_batches(); ++i) {
    const data::Batch batch = feed.next();
    const at::Tensor& x = batch.inputs;
    const at::Tensor& y = batch.targets;
    at::Tensor out;
    {
      AutocastGuard amp(device.type(), autocast_dtype(precision), precision != "32");
      out = model.forward<at::Tensor>(x);
    }
    meter->update(out, y, task.loss(out, y));
  }
  module.train(was_training);
  if (reduce != nullptr) meter->reduce(*reduce);
  return meter->compute();
}

Metrics Trainer::validate(data::BatchSource& loader) {
  if (!sync_) return evaluate(model_, task_, loader, device_, cfg_.precision);
  sync_->broadcast_buffers();  // BatchNorm statistics: every rank evaluates rank 0's model
  const MeterReduce reduce = sync_->meter_reduce();
  return evaluate(model_, task_, loader, device_, cfg_.precision, &reduce);
}

Metrics Trainer::validate_ema(data::BatchSource& loader) {
  if (!ema_) return {};
  const ModelEma::Swap swap(*ema_);  // the model holds the EMA weights until the end
  return validate(loader);
}

at::Tensor Trainer::predict(data::BatchSource& loader) {
  auto& module = *model_.ptr();
  const bool was_training = module.is_training();
  module.eval();
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> outs;
  for (int64_t i = 0; i < loader.num_batches(); ++i)
    outs.push_back(forward(loader.batch(i).inputs.to(device_)).to(at::kFloat).cpu());
  module.train(was_training);
  return at::cat(outs);
}

}  // namespace lathe::train
