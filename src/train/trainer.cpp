// Trainer: epochs of forward/backward/step with schedule, progress, metrics.jsonl, NaN checks.
#include "lathe/train/trainer.h"

#include <chrono>
#include <cmath>

#include <ATen/ops/cross_entropy_loss.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "lathe/core/error.h"
#include "lathe/core/log.h"
#include "lathe/optim/optimizer.h"
#include "lathe/train/metrics.h"
#include "models/regularized.h"

namespace lathe::train {

MetricsLog::MetricsLog(const std::filesystem::path& file) : file_(file) {
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
  out_.open(file, std::ios::out | std::ios::trunc);
  LATHE_CHECK(out_.is_open(), IoError, "{}: cannot open the metrics log for writing",
              file.string());
}

void MetricsLog::write(const std::string& kind, int64_t epoch, int64_t step,
                       const Metrics& values) {
  if (!out_.is_open()) return;
  nlohmann::ordered_json j;
  j["kind"] = kind;
  j["epoch"] = epoch;
  j["step"] = step;
  for (const auto& [k, v] : values) j[k] = std::isfinite(v) ? nlohmann::ordered_json(v) : nullptr;
  out_ << j.dump() << '\n';
  out_.flush();
  LATHE_CHECK(out_.good(), IoError, "{}: write failed (disk full?)", file_.string());
}

namespace {

Metrics prefixed(const std::string& prefix, const Metrics& m) {
  Metrics out;
  for (const auto& [k, v] : m) out[prefix + "/" + k] = v;
  return out;
}

void check_finite(double loss, int64_t epoch, int64_t step) {
  LATHE_CHECK(std::isfinite(loss), TrainError,
              "non-finite training loss ({}) at epoch {}, step {}: training stopped and no "
              "weights were saved; lower optim.lr, check the inputs for NaN/inf, or add warmup",
              loss, epoch, step);
}

}  // namespace

Trainer::Trainer(TrainerOptions options, torch::nn::AnyModule model,
                 torch::optim::Optimizer& optimizer, sched::LrSchedule schedule)
    : options_(std::move(options)),
      model_(std::move(model)),
      optimizer_(optimizer),
      schedule_(std::move(schedule)) {
  if (!options_.metrics_file.empty()) log_ = MetricsLog(options_.metrics_file);
}

bool Trainer::show_bar() const {
  return options_.progress == "bar" ||
         (options_.progress == "auto" && log::is_tty(stderr));
}

Metrics Trainer::train_epoch(data::TensorLoader& loader, int64_t epoch) {
  auto& module = *model_.ptr();
  module.train(true);
  loader.set_epoch(epoch - 1);
  ClassificationMeter meter, window;
  const int64_t n = loader.num_batches();
  log::ProgressBar bar(fmt::format("epoch {}/{}", epoch, options_.max_epochs), n, stderr,
                       show_bar());
  for (int64_t i = 0; i < n; ++i) {
    const data::Batch batch = loader.batch(i);
    const at::Tensor x = batch.inputs.to(options_.device, /*non_blocking=*/true);
    const at::Tensor y = batch.targets.to(options_.device, /*non_blocking=*/true);

    lr_ = schedule_.value_at(step_);
    optim::set_learning_rate(optimizer_, lr_);
    optimizer_.zero_grad(/*set_to_none=*/true);
    const at::Tensor logits = model_.forward<at::Tensor>(x);  // (B, K)
    const at::Tensor loss = at::cross_entropy_loss(logits, y);  // ()
    // A Regularized model (lasso, ridge) adds its weight penalty to what is minimised; the
    // logged loss stays the task's.
    const at::Tensor penalty = models::penalty_of(module);
    (penalty.defined() ? loss + penalty : loss).backward();
    optimizer_.step();
    ++step_;
    meter.update(logits, y, loss);
    window.update(logits, y, loss);

    // Read the loss back (a device sync) only every log_every_n_steps and at the epoch's end.
    if (step_ % options_.log_every_n_steps == 0 || i + 1 == n) {
      const Metrics w = window.compute();
      check_finite(w.at("loss"), epoch, step_);
      log_.write("step", epoch, step_, {{"train/loss", w.at("loss")}, {"lr", lr_}});
      if (options_.progress == "plain")
        log::info("epoch {} step {}/{}: loss {:.4f} lr {:.3g}", epoch, i + 1, n, w.at("loss"),
                  lr_);
      window.reset();
      bar.update(i + 1, fmt::format("loss {:.4f} lr {:.2e}", w.at("loss"), lr_));
    }
  }
  bar.finish();
  return meter.compute();
}

std::vector<EpochRecord> Trainer::fit(data::TensorLoader& train, data::TensorLoader* val) {
  std::vector<EpochRecord> history;
  for (int64_t epoch = 1; epoch <= options_.max_epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    EpochRecord rec;
    rec.epoch = epoch;
    rec.train = train_epoch(train, epoch);
    check_finite(rec.train.at("loss"), epoch, step_);
    if (val != nullptr && val->dataset().size() > 0) rec.val = evaluate(*val);
    rec.step = step_;
    rec.lr = lr_;
    rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    Metrics row = prefixed("train", rec.train);
    for (const auto& [k, v] : prefixed("val", rec.val)) row[k] = v;
    row["lr"] = rec.lr;
    row["time_s"] = rec.seconds;
    log_.write("epoch", epoch, step_, row);
    if (options_.progress != "none") {
      std::string val_part;
      if (!rec.val.empty())
        val_part = fmt::format(" | val loss {:.4f} acc {:.4f}", rec.val.at("loss"),
                               rec.val.at("accuracy"));
      log::info("epoch {}/{}: train loss {:.4f} acc {:.4f}{} | lr {:.2e} | {:.1f}s", epoch,
                options_.max_epochs, rec.train.at("loss"), rec.train.at("accuracy"), val_part,
                rec.lr, rec.seconds);
    }
    history.push_back(std::move(rec));
  }
  return history;
}

Metrics evaluate(torch::nn::AnyModule& model, data::TensorLoader& loader, c10::Device device) {
  auto& module = *model.ptr();
  const bool was_training = module.is_training();
  module.eval();
  torch::NoGradGuard no_grad;
  ClassificationMeter meter;
  for (int64_t i = 0; i < loader.num_batches(); ++i) {
    const data::Batch batch = loader.batch(i);
    const at::Tensor x = batch.inputs.to(device, /*non_blocking=*/true);
    const at::Tensor y = batch.targets.to(device, /*non_blocking=*/true);
    const at::Tensor logits = model.forward<at::Tensor>(x);  // (B, K)
    meter.update(logits, y, at::cross_entropy_loss(logits, y));
  }
  module.train(was_training);
  return meter.compute();
}

}  // namespace lathe::train
