// Int8 for export_model: picks the mode, records activation ranges by running the traced graph on
// calibration batches (static), rewrites the model (lathe/onnx/quantize.h) and says so in its
// metadata.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/onnx/export.h"
#include "lathe/onnx/ir.h"
#include "lathe/onnx/quantize.h"
#include "src/onnx/trace.h"

namespace lathe::onnx::detail {

/// The range each of `names` takes when the traced graph runs on `batches` (each shaped as
/// `examples` except along axis 0; run in pieces of the examples' batch size, since the trace
/// fixed it). `values` maps ONNX names to traced values (translate's); names not in it are
/// left out of the result.
ValueRanges calibrate(const TracedGraph& traced,
                      const std::unordered_map<std::string, const torch::jit::Value*>& values,
                      const std::vector<std::string>& names,
                      const std::vector<at::Tensor>& examples,
                      const std::vector<std::vector<at::Tensor>>& batches);

/// Quantizes `model` as `options.int8` says (calling `options.calibration` for a static export)
/// and adds the "quantization" metadata entry; returns a one-line summary for the log.
std::string apply_int8(Model& model, const TracedGraph& traced,
                       const std::unordered_map<std::string, const torch::jit::Value*>& values,
                       const std::vector<at::Tensor>& examples, const ExportOptions& options);

}  // namespace lathe::onnx::detail
