// A finished run folder read back for predict and generate: its resolved config, its model.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <torch/nn/modules/container/any.h>

#include "lathe/config/config.h"

namespace lathe::run::detail {

/// RUN/config.yaml (resolved when the run trained) with `overrides`; a ConfigError saying what to
/// pass when `run_dir` holds none.
config::RunConfig load_finished_config(const std::filesystem::path& run_dir,
                                       const std::vector<std::string>& overrides);

/// The run's model built from `cfg` with `weights` (default RUN/model.safetensors; .safetensors
/// or torch.save files, strictly), on `device`, in eval mode.
torch::nn::AnyModule load_finished_model(const config::RunConfig& cfg,
                                         const std::filesystem::path& run_dir,
                                         const std::filesystem::path& weights, c10::Device device);

}  // namespace lathe::run::detail
