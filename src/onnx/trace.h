// Tracing a forward for export: the ATen graph at the example sizes, plus, for every value, which
// of its sizes follow the dynamic axes (found by tracing again with each dynamic axis grown).
#pragma once

#include <array>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/onnx/export.h"

namespace torch::jit {
struct Graph;
struct Value;
}  // namespace torch::jit

namespace lathe::onnx::detail {

/// A dynamic axis: its symbol ("batch") and the graph input / axis that carries it at run time.
struct Symbol {
  std::string name;
  int64_t input = 0;
  int64_t axis = 0;
  int64_t base = 0;  ///< its size in the base trace
};

/// A size as a function of (at most two) symbols s0, s1: k12·s0·s1 + k0·s0 + k1·s1 + j.
/// A fixed size has all k = 0. `known` is false when the traces vary in a way this form cannot
/// express (the export then fails only if that size is needed).
struct SymSize {
  int64_t j = 0;
  std::array<int64_t, 2> k{0, 0};
  int64_t k12 = 0;
  bool known = true;
  /// A graph input's spatial axis (kSpatialSymbols): its symbol; such sizes are never known.
  std::string spatial;
  bool dynamic() const { return !known || k[0] != 0 || k[1] != 0 || k12 != 0; }
  /// The symbol index when the size is exactly one symbol (k = 1, j = 0), else -1.
  int plain_symbol() const;
};
using SymShape = std::vector<SymSize>;

/// Symbols of axes whose sizes may move any way through the graph ("height", "width" of images:
/// strided convolutions floor them). They are not among `symbols`: the forward is traced once
/// more with all of them grown by kSpatialGrowth, every size that moves becomes unknown (ONNX
/// computes it, lathe never needs it), and an integer constant that moves is refused.
inline const std::array<const char*, 2> kSpatialSymbols{"height", "width"};
constexpr int64_t kSpatialGrowth = 32;

/// The base trace and what the others taught about its sizes.
struct TracedGraph {
  std::shared_ptr<torch::jit::Graph> graph;
  std::vector<Symbol> symbols;
  std::vector<Symbol> spatial;  ///< the spatial symbols (kSpatialSymbols) used by the inputs
  /// For every tensor value of `graph`: its sizes.
  std::unordered_map<const torch::jit::Value*, SymShape> shapes;
  /// For every int / int[] constant of `graph`: its elements (one entry for an int).
  std::unordered_map<const torch::jit::Value*, SymShape> ints;
  /// Constant tensors that are the module's parameters or buffers: their state-dict names.
  std::unordered_map<const torch::jit::Value*, std::string> parameter_names;
  /// Which module owns each parameter name ("layer1.0.conv1.weight" → "layer1.0.conv1").
  std::vector<at::Tensor> outputs;  ///< the forward's outputs at the base sizes
};

/// Traces `forward` at `inputs` and once more per dynamic symbol in `specs` (that axis grown by
/// one, the input's values repeated along it). Parameters are made non-trainable meanwhile so
/// that they are recorded as constants, and restored.
TracedGraph trace_forward(torch::nn::Module& module, const ForwardFn& forward,
                          const std::vector<at::Tensor>& inputs,
                          const std::vector<InputSpec>& specs);

}  // namespace lathe::onnx::detail
