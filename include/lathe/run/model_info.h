// `lathe info --model`: what a zoo (or registered) model is made of, without data or training.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lathe/config/config.h"

namespace lathe::run {

/// A model built from its config section, described.
struct ModelSummary {
  /// Its size options that a run fills from the data (`auto`), each followed by " (given)" when
  /// the section sets it.
  std::vector<std::string> data_sizes;
  std::string module;      ///< the module as LibTorch prints it
  int64_t parameters = 0;  ///< trainable + frozen
};

/// Builds the model `section` names (models::build_model) and describes it; a bad name or option
/// is the ConfigError building it gives.
///
///   auto s = lathe::run::summarize_model(lathe::config::parse_model_section("convnet", {}));
ModelSummary summarize_model(const config::ModelSection& section);

}  // namespace lathe::run
