// ONNX export from C++: trace a module's forward, translate the ATen graph to ONNX opset 17,
// validate it (checker + strict shape inference) and write it atomically.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lathe/onnx/quantize.h"

namespace torch::nn {
class Module;
class AnyModule;
}  // namespace torch::nn

namespace lathe::onnx {

struct Model;

/// One graph input: its name and which of its axes are dynamic (axis → symbol, e.g.
/// {0: "batch", 1: "seq"}). Inputs that share a symbol share that size at run time.
struct InputSpec {
  std::string name;
  std::map<int64_t, std::string> dynamic_axes;
};

/// What export_model writes besides the graph.
struct ExportOptions {
  /// ONNX opset. lathe emits opset 17 (IR version 8); other values are refused.
  int64_t opset = 17;
  /// One per example input, in order. Missing entries get "input<i>" with axis 0 = "batch".
  std::vector<InputSpec> inputs;
  /// Graph output names, one per tensor the forward returns ("output<i>" when missing).
  std::vector<std::string> output_names;
  /// Store weights and compute in float16 (inputs and outputs stay float32, with casts).
  bool fp16 = false;
  /// metadata_props added to the model (lathe adds lathe_version itself). Keys must be unique.
  std::vector<std::pair<std::string, std::string>> metadata;
  /// The model's doc_string (e.g. the zoo name).
  std::string doc_string;
  /// Passes over the translated model, in order, before it is checked and written: they may add
  /// nodes before the traced graph's inputs or after its outputs (preprocessing, labels) or
  /// rewrite nodes (quantization). See lathe/onnx/ir.h for the model's plain structs.
  std::vector<std::function<void(Model&)>> graph_passes;
  /// Int8 quantization of the translated model, before graph_passes (lathe/onnx/quantize.h):
  /// dynamic, static (QDQ, calibrated), or automatic (static when the graph has a Conv).
  /// Needs a float32 export; metadata_props gets a "quantization" entry saying how.
  Int8Mode int8 = Int8Mode::none;
  /// Static int8: the batches to calibrate on, each the forward's inputs shaped as the example
  /// inputs except along axis 0. Called only when static quantization is chosen.
  std::function<std::vector<std::vector<at::Tensor>>()> calibration;
  /// Where those batches come from, for the metadata ("training batches of runs/x").
  std::string calibration_source;
};

/// What was exported: the file, the graph's size and its inputs / outputs with shapes
/// ("batch" for dynamic axes), for logs and for the Triton config.
struct ExportReport {
  std::filesystem::path path;
  int64_t nodes = 0;
  int64_t initializers = 0;
  int64_t bytes = 0;
  struct Io {
    std::string name;
    std::string dtype;  ///< ONNX type name: "float", "int64", ...
    std::vector<std::string> shape;  ///< fixed sizes as numbers, dynamic axes as their symbol
  };
  std::vector<Io> inputs, outputs;
  /// With int8: what was quantized ("int8 dynamic: 36 MatMul, 1 Gemm quantized").
  std::string quantization;
};

/// The forward to export: takes the graph inputs, returns the graph outputs.
using ForwardFn = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

/// Exports `forward` (which uses `module`'s parameters and buffers, named as in its state dict)
/// for `example_inputs`. The forward is traced (once per dynamic symbol and once more), so it
/// must not branch on tensor values; sizes it reads with x.size(i) may be dynamic. The module is
/// run in eval mode, without gradients, and restored afterwards.
/// Throws ExportError naming the operation and the module path for anything ONNX opset 17
/// cannot express, and ExportError with ONNX's message when validation fails; the file is then
/// not written.
///
///   lathe::onnx::ExportOptions o;
///   o.inputs = {{"images", {{0, "batch"}}}};
///   o.output_names = {"logits"};
///   lathe::onnx::export_model(*net, [&](auto& in) { return std::vector{net->forward(in[0])}; },
///                             {at::randn({2, 3, 32, 32})}, "net.onnx", o);
ExportReport export_model(torch::nn::Module& module, const ForwardFn& forward,
                          const std::vector<at::Tensor>& example_inputs,
                          const std::filesystem::path& path, const ExportOptions& options = {});

/// The same for a type-erased module (a zoo model): its forward gets the inputs in order.
ExportReport export_model(torch::nn::AnyModule& module,
                          const std::vector<at::Tensor>& example_inputs,
                          const std::filesystem::path& path, const ExportOptions& options = {});

/// The ATen operations the exporter translates, sorted ("aten::linear", ...).
std::vector<std::string> supported_operations();

/// Writes a Triton model repository entry: <repo>/<model_name>/config.pbtxt and
/// <repo>/<model_name>/1/model.onnx (a copy of `onnx_file`), with the onnxruntime backend,
/// max_batch_size > 0 and the batch axis left out of the dims as Triton expects.
/// Requires axis 0 of every input and output to be the dynamic "batch" axis.
std::filesystem::path write_triton_repository(const ExportReport& report,
                                              const std::filesystem::path& repo,
                                              const std::string& model_name,
                                              int64_t max_batch_size = 64);

}  // namespace lathe::onnx
