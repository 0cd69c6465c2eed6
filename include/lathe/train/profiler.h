// Step profiling (trainer.profile): record some optimizer steps with LibTorch's profiler and
// write a Chrome / Perfetto trace plus tables of where the time went.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "lathe/train/callback.h"

namespace lathe::train {

/// One row of a profile table: an operator (aten::addmm), a model part named by a
/// lathe::ProfileScope ("layer1.0"), or a device kernel.
struct ProfileRow {
  std::string name;
  int64_t calls = 0;
  double self_us = 0;   ///< time in it, less the time of what it called (operators) or of the
                        ///< model parts nested in it (model parts)
  double total_us = 0;  ///< time from its start to its end, summed over its calls
};

/// What a profile holds, summed over its recorded steps (each table sorted by self time).
struct ProfileSummary {
  std::vector<ProfileRow> operators;  ///< host-side operators (aten::..., lathe's own scopes)
  std::vector<ProfileRow> modules;    ///< model parts (user scopes), self = time outside nested parts
  std::vector<ProfileRow> kernels;    ///< device kernels (CUDA), empty on the CPU
  int64_t steps = 0;
  double wall_us = 0;                 ///< from the first recorded event's start to the last end
};

/// Records optimizer steps [first, last] (1-based, inclusive) with LibTorch's Kineto profiler
/// (host operators; CUDA kernels too on a CUDA device), then writes into `dir`:
///   trace.json   — Chrome trace events: chrome://tracing or ui.perfetto.dev opens it
///   profile.txt  — the top `rows` operators, model parts and kernels by self time
///   profile.json — the same tables in full, as JSON
/// A run shorter than `first` records nothing and says so once at the end. Only one profiler
/// can run in a process, so only the main rank of a data-parallel run profiles.
///
///   trainer.add_callback(std::make_shared<ProfilerCallback>(6, 10, run_dir / "profile", device));
class ProfilerCallback : public Callback {
 public:
  ProfilerCallback(int64_t first, int64_t last, std::filesystem::path dir, c10::Device device,
                   int64_t rows = 20);
  ~ProfilerCallback() override;
  std::string name() const override { return "profiler"; }
  void on_fit_start(Trainer& trainer) override;
  void on_train_step_end(Trainer& trainer, int64_t batch, int64_t batches) override;
  void on_fit_end(Trainer& trainer) override;
  /// The summary of the recorded window (empty before it has ended).
  const ProfileSummary& summary() const { return summary_; }

 private:
  void start();
  void finish(int64_t last_step);

  int64_t first_, last_, rows_;
  std::filesystem::path dir_;
  c10::Device device_;
  bool recording_ = false;
  ProfileSummary summary_;
};

/// The rows as an aligned text table ("self ms  total ms  calls  name"), at most `rows` of them.
std::string format_profile_table(const std::string& title, const std::vector<ProfileRow>& rows,
                                 int64_t max_rows);

}  // namespace lathe::train
