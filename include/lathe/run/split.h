// A finished run's test split as tensors in a file, exactly as its model receives them (images
// normalised, text tokenized and padded, tables preprocessed): to evaluate an exported ONNX file
// elsewhere (onnxruntime, Triton) on the records `lathe eval` scores.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace lathe::run {

/// Writes a safetensors file holding "inputs" (the test split's model inputs, in the loader's
/// order) and "targets", with metadata "task" and "records". `overrides` apply on top of the
/// run's config.yaml as for evaluate_run. Returns the number of records written.
///
///   lathe::run::save_test_split("runs/fashion_cnn", {}, "fashion_test.safetensors");
int64_t save_test_split(const std::filesystem::path& run_dir,
                        const std::vector<std::string>& overrides,
                        const std::filesystem::path& file);

}  // namespace lathe::run
