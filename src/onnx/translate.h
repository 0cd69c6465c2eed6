// Translating a traced ATen graph (src/onnx/trace.h) into lathe's ONNX IR (lathe/onnx/ir.h).
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "lathe/onnx/export.h"
#include "lathe/onnx/ir.h"
#include "src/onnx/trace.h"

namespace lathe::onnx::detail {

/// The graph for `traced`: named inputs with their dynamic axes, parameters as initializers under
/// their state-dict names, one ONNX subgraph per ATen operation, named outputs.
/// An operation without a translation is an ExportError naming it and the module it is in.
/// `values`, when given, receives the traced value each ONNX tensor name carries (graph inputs
/// and node results that are traced values; not initializers), for int8 calibration.
Graph translate(const TracedGraph& traced, const std::vector<InputSpec>& inputs,
                const std::vector<std::string>& output_names, bool fp16,
                std::unordered_map<std::string, const torch::jit::Value*>* values = nullptr);

}  // namespace lathe::onnx::detail
