// Int8 for export_model: static calibration on the traced graph (run by TorchScript's interpreter
// with the quantized activations as extra outputs), then the quantization passes.
#include "src/onnx/calibrate.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/runtime/interpreter.h>

#include "lathe/core/error.h"

namespace lathe::onnx::detail {
namespace jit = torch::jit;

ValueRanges calibrate(const TracedGraph& traced,
                      const std::unordered_map<std::string, const jit::Value*>& values,
                      const std::vector<std::string>& names,
                      const std::vector<at::Tensor>& examples,
                      const std::vector<std::vector<at::Tensor>>& batches) {
  // A copy of the graph (the same nodes in the same order) that also returns the values wanted.
  const std::shared_ptr<jit::Graph> graph = traced.graph->copy();
  std::unordered_map<const jit::Value*, jit::Value*> peer;
  for (size_t i = 0; i < graph->inputs().size(); ++i)
    peer[traced.graph->inputs()[i]] = graph->inputs()[i];
  auto copied = graph->nodes().begin();
  for (jit::Node* n : traced.graph->nodes()) {
    for (size_t i = 0; i < n->outputs().size(); ++i) peer[n->output(i)] = copied->output(i);
    ++copied;
  }
  std::vector<std::string> recorded;
  for (const std::string& name : names) {
    auto it = values.find(name);
    if (it == values.end() || !peer.count(it->second)) continue;
    graph->registerOutput(peer.at(it->second));
    recorded.push_back(name);
  }
  const size_t first_extra = graph->outputs().size() - recorded.size();
  const jit::Code code(graph, "lathe_calibration");

  const at::Device device = examples.front().device();
  const int64_t piece = examples.front().size(0);  // the batch size the trace fixed
  ValueRanges ranges;
  for (const auto& batch : batches) {
    LATHE_CHECK(batch.size() == examples.size(), ExportError,
                "calibration: a batch has {} inputs; the forward takes {}", batch.size(),
                examples.size());
    const int64_t records = batch.front().size(0);
    for (size_t i = 0; i < batch.size(); ++i) {
      LATHE_CHECK(batch[i].dim() == examples[i].dim() && batch[i].size(0) == records &&
                      batch[i].sizes().slice(1) == examples[i].sizes().slice(1),
                  ExportError,
                  "calibration: input {} of a batch has shape {}; the export traced {} (only "
                  "axis 0 may differ)",
                  i, batch[i].sizes(), examples[i].sizes());
    }
    for (int64_t start = 0; start < records; start += piece) {
      // The last piece repeats its rows up to the traced size (a repeat moves no min or max).
      const at::Tensor rows =
          at::arange(start, start + piece, at::kLong).remainder(records - start) + start;
      jit::Stack stack;
      for (const auto& x : batch) stack.emplace_back(x.index_select(0, rows).to(device));
      jit::InterpreterState(code).run(stack);
      for (size_t k = 0; k < recorded.size(); ++k) {
        const at::Tensor v = stack.at(first_extra + k).toTensor().detach();
        const float lo = v.min().item<float>(), hi = v.max().item<float>();
        auto [it, fresh] = ranges.emplace(recorded[k], ValueRange{lo, hi});
        if (!fresh) {
          it->second.min = std::min(it->second.min, lo);
          it->second.max = std::max(it->second.max, hi);
        }
      }
    }
  }
  return ranges;
}

std::string apply_int8(Model& model, const TracedGraph& traced,
                       const std::unordered_map<std::string, const jit::Value*>& values,
                       const std::vector<at::Tensor>& examples, const ExportOptions& options) {
  LATHE_CHECK(!options.fp16, ExportError,
              "int8 and fp16 exclude each other (int8 quantizes a float32 graph); drop one");
  Int8Mode mode = options.int8;
  if (mode == Int8Mode::automatic) {
    mode = has_convolution(model.graph) ? Int8Mode::static_qdq : Int8Mode::dynamic;
  }
  QuantizeSummary summary;
  nlohmann::ordered_json meta;
  std::string calibration;
  if (mode == Int8Mode::dynamic) {
    summary = quantize_dynamic(model.graph);
    meta["mode"] = "dynamic";
    meta["weights"] = "int8 symmetric, per output channel";
    meta["activations"] = "uint8 per tensor, quantized at run time (DynamicQuantizeLinear)";
    meta["embeddings"] = "int8 symmetric, per column (Gather, then DequantizeLinear)";
    meta["operators"] = "DynamicQuantizeLinear, MatMulInteger, Cast, Mul, DequantizeLinear";
  } else {
    LATHE_CHECK(static_cast<bool>(options.calibration), ExportError,
                "static int8 needs calibration batches and none were given");
    const std::vector<std::vector<at::Tensor>> batches = options.calibration();
    LATHE_CHECK(!batches.empty(), ExportError,
                "static int8: no calibration batches (the calibration data is empty)");
    int64_t records = 0;
    for (const auto& b : batches) records += b.front().size(0);
    const int64_t folded = fold_batch_norms(model.graph);
    const std::vector<std::string> names = static_activations(model.graph);
    const ValueRanges ranges = calibrate(traced, values, names, examples, batches);
    summary = quantize_static(model.graph, ranges);
    calibration = fmt::format("{} batch{} ({} records){}, min/max", batches.size(),
                              batches.size() == 1 ? "" : "es", records,
                              options.calibration_source.empty()
                                  ? ""
                                  : " of " + options.calibration_source);
    meta["mode"] = "static";
    meta["format"] = "QDQ";
    meta["weights"] = "int8 symmetric, per output channel (DequantizeLinear axis)";
    meta["activations"] = "uint8 asymmetric, per tensor, calibrated";
    meta["biases"] = "int32 at input scale x weight scale";
    meta["calibration"] = calibration;
    meta["quantized_activations"] = summary.activations;
    meta["quantized_results"] = summary.results;
    meta["weight_only_nodes"] = summary.weight_only;
    meta["batch_norms_folded"] = folded;
  }
  std::vector<std::string> counts;
  for (const auto& [op, n] : summary.quantized) counts.push_back(fmt::format("{} {}", n, op));
  LATHE_CHECK(!counts.empty(), ExportError,
              "int8 ({}): the graph has no MatMul, Gemm, Conv or embedding Gather with an "
              "initializer weight to quantize; export without --int8",
              int8_mode_name(mode));
  const std::string nodes = fmt::format("{}", fmt::join(counts, ", "));
  meta["nodes"] = nodes;
  model.metadata.emplace_back("quantization", meta.dump());
  return fmt::format("int8 {}: {} quantized{}", int8_mode_name(mode), nodes,
                     calibration.empty() ? "" : "; calibrated on " + calibration);
}

}  // namespace lathe::onnx::detail
