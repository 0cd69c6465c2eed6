// Full training checkpoints: everything needed to continue a run exactly, written atomically,
// with retention (last k + best), stable names, an asynchronous mode, and resume.
#pragma once

#include <exception>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lathe/config/config.h"
#include "lathe/train/callback.h"

namespace lathe::train {
class Trainer;
}
namespace torch::nn {
class Module;
}

namespace lathe::ckpt {

/// Version of the checkpoint layout; load_checkpoint refuses any other.
inline constexpr int kCheckpointFormatVersion = 1;

/// The EMA weights (trainer.ema) beside model.safetensors, in a checkpoint and in a run folder.
inline constexpr const char* kEmaWeightsFile = "model_ema.safetensors";

/// A checkpoint is a folder <dir>/step-<NNNNNNNN>/ holding
///   model.safetensors     the weights with PyTorch state-dict names (Python's safetensors loads
///                         them straight into the torchvision / transformers model)
///   model_ema.safetensors with trainer.ema: the moving average of those weights, same names
///   optimizer.pt          the optimizer's state (LibTorch serialization)
///   rng.safetensors       the CPU and CUDA generator states
///   state.json            format version, epoch / step / loader position, gradient scaler,
///                         plateau, callback states, best metric, the run's config
/// It is written into a temporary folder and renamed into place, so a crash at any moment
/// leaves only complete checkpoints; "last" and "best" are symlinks to the newest and the best.
///
///   save_checkpoint(trainer, "runs/x/checkpoints/step-00000100", cfg_yaml, extra);
void save_checkpoint(train::Trainer& trainer, const std::filesystem::path& folder,
                     const std::string& config_yaml, const std::string& extra_json = "{}");

/// Restores model, optimizer, scaler, plateau, RNGs, progress and callback states from a
/// checkpoint folder. A missing or truncated file, another format version, or weights for
/// another model are CheckpointErrors naming the file (and tensor).
void load_checkpoint(train::Trainer& trainer, const std::filesystem::path& folder);

/// The global step a checkpoint folder was written at (from its state.json).
int64_t checkpoint_step(const std::filesystem::path& folder);

/// The checkpoint folder `spec` means: "auto" = <run_dir>/checkpoints/last; else a checkpoint
/// folder, or a run folder (its checkpoints/last).
std::filesystem::path resolve_resume(const std::string& spec, const std::filesystem::path& run_dir);

/// Writes checkpoints during fit (every N steps and/or epochs), keeps the newest keep_last and
/// the best by a validation metric, maintains the "last" and "best" links, and can write on a
/// background thread from a host-memory snapshot. Never saves non-finite weights as best or last.
/// A Trainer resumes from one of its folders with load_checkpoint before fit:
///
///   lathe::config::CheckpointSection c;  // every epoch, keep the last 2 and the best
///   trainer.add_callback(std::make_shared<lathe::ckpt::Checkpointer>(
///       c, "out/checkpoints", /*config_yaml=*/"", "val/loss", /*higher_is_better=*/false));
///   trainer.fit(train, &val);
///   // later, in a new Trainer built the same way:
///   lathe::ckpt::load_checkpoint(trainer, "out/checkpoints/last");
///   trainer.fit(train, &val);  // continues at the checkpoint's epoch, step and batch
class Checkpointer : public train::Callback {
 public:
  Checkpointer(config::CheckpointSection cfg, std::filesystem::path dir, std::string config_yaml,
               std::string default_monitor, bool higher_is_better);
  ~Checkpointer() override;
  std::string name() const override { return "checkpointer"; }
  void on_train_step_end(train::Trainer& t, int64_t batch, int64_t batches) override;
  void on_validation_end(train::Trainer& t, const train::Metrics& val) override;
  void on_train_epoch_end(train::Trainer& t, int64_t epoch) override;
  void on_fit_end(train::Trainer& t) override;
  std::string state_json() const override;
  void load_state_json(const std::string& json) override;

  /// Saves now (folder step-<global step>), applying retention. Waits for a previous async write.
  std::filesystem::path save(train::Trainer& t);
  /// Blocks until a background write has finished; rethrows its error.
  void wait();
  const std::filesystem::path& dir() const { return dir_; }
  double best_value() const { return best_value_; }
  const std::string& best_name() const { return best_name_; }

 private:
  void retain();
  config::CheckpointSection cfg_;
  std::filesystem::path dir_;
  std::string config_yaml_, monitor_;
  bool maximize_;
  double best_value_;
  std::string best_name_;
  double last_monitored_ = std::numeric_limits<double>::quiet_NaN();
  int64_t last_saved_step_ = -1;
  std::thread worker_;
  std::exception_ptr worker_error_;
};

/// Applies a config's model: fine-tuning keys to a freshly built model: loads `pretrained`
/// (remapped, strict or not) and logs what was skipped; marks `freeze` patterns frozen.
/// Returns the load report's summary ("" without pretrained weights).
std::string apply_pretrained(torch::nn::Module& module, const config::ModelSection& cfg);

}  // namespace lathe::ckpt
