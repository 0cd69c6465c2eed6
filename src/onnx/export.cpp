// ONNX export: trace → translate → check → atomic write; and the Triton repository layout.
#include "lathe/onnx/export.h"

#include <fstream>
#include <set>

#include <ATen/ATen.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/nn/modules/container/any.h>

#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/onnx/estimators.h"
#include "lathe/onnx/ir.h"
#include "src/onnx/calibrate.h"
#include "src/onnx/trace.h"
#include "src/onnx/translate.h"

namespace lathe::onnx {
namespace {

std::string dim_text(const Dim& d) {
  if (const auto* fixed = std::get_if<int64_t>(&d)) return std::to_string(*fixed);
  const std::string& s = std::get<std::string>(d);
  return s.empty() ? "?" : s;
}

std::vector<ExportReport::Io> describe(const std::vector<ValueInfo>& values) {
  std::vector<ExportReport::Io> out;
  for (const ValueInfo& v : values) {
    ExportReport::Io io{v.name, dtype_name(v.dtype), {}};
    for (const Dim& d : v.shape) io.shape.push_back(dim_text(d));
    out.push_back(io);
  }
  return out;
}

/// Input specs for every example input: the caller's, else "input<i>" with a dynamic batch.
std::vector<InputSpec> complete_specs(const std::vector<InputSpec>& given, size_t count) {
  LATHE_CHECK(given.size() <= count, ExportError,
              "{} input specs were given for a forward with {} inputs", given.size(), count);
  std::vector<InputSpec> specs = given;
  for (size_t i = specs.size(); i < count; ++i) {
    specs.push_back({fmt::format("input{}", i), {{0, "batch"}}});
  }
  std::set<std::string> names;
  for (const auto& s : specs) {
    LATHE_CHECK(names.insert(s.name).second, ExportError, "input name '{}' is used twice", s.name);
  }
  return specs;
}

/// The model's names and metadata_props from `options`.
void describe_model(Model& model, const std::filesystem::path& path, const ExportOptions& options) {
  model.graph.name = path.stem().string();
  model.producer_version = LATHE_VERSION;
  if (!options.doc_string.empty()) model.doc_string = options.doc_string;
  model.metadata.emplace_back("lathe_version", LATHE_VERSION);
  std::set<std::string> keys{"lathe_version"};
  for (const auto& kv : options.metadata) {
    LATHE_CHECK(keys.insert(kv.first).second, ExportError,
                "{}: metadata key '{}' is given twice", path.string(), kv.first);
    model.metadata.push_back(kv);
  }
}

/// The common end of every export: graph passes, ONNX's checks, atomic write, the report.
ExportReport finish_export(Model& model, const std::filesystem::path& path,
                           const ExportOptions& options, const std::string& quantization) {
  for (const auto& pass : options.graph_passes) pass(model);
  const std::string bytes = serialize_checked(model, path.string());
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  write_file_atomic(path, bytes);

  ExportReport report;
  report.path = path;
  report.nodes = static_cast<int64_t>(model.graph.nodes.size());
  report.initializers = static_cast<int64_t>(model.graph.initializers.size());
  report.bytes = static_cast<int64_t>(bytes.size());
  report.inputs = describe(model.graph.inputs);
  report.outputs = describe(model.graph.outputs);
  report.quantization = quantization;
  return report;
}

}  // namespace

ExportReport write_model(Model model, const std::filesystem::path& path,
                         const ExportOptions& options) {
  LATHE_CHECK(options.opset == 17, ExportError,
              "{}: opset {} requested; lathe exports opset 17 (IR version 8)", path.string(),
              options.opset);
  LATHE_CHECK(!options.fp16 && options.int8 == Int8Mode::none, ExportError,
              "{}: fp16 and int8 rewrite traced networks; this model ({}) is exported as it is, "
              "without --fp16 / --int8",
              path.string(), model.doc_string);
  describe_model(model, path, options);
  return finish_export(model, path, options, "");
}

ExportReport export_model(torch::nn::Module& module, const ForwardFn& forward,
                          const std::vector<at::Tensor>& example_inputs,
                          const std::filesystem::path& path, const ExportOptions& options) {
  LATHE_CHECK(options.opset == 17, ExportError,
              "{}: opset {} requested; lathe exports opset 17 (IR version 8), which onnxruntime, "
              "TensorRT >= 8.6 and Triton accept",
              path.string(), options.opset);
  LATHE_CHECK(!example_inputs.empty(), ExportError, "{}: no example inputs", path.string());
  const std::vector<InputSpec> specs = complete_specs(options.inputs, example_inputs.size());
  // The trace runs where the module's weights are (the file gets CPU copies of them).
  const auto params = module.parameters();
  const at::Device device = params.empty() ? at::Device(at::kCPU) : params.front().device();
  std::vector<at::Tensor> inputs;
  for (const auto& x : example_inputs) inputs.push_back(x.detach().to(device));

  detail::TracedGraph traced = detail::trace_forward(module, forward, inputs, specs);
  torch::jit::EliminateDeadCode(traced.graph);
  Model model;
  std::unordered_map<std::string, const torch::jit::Value*> values;  // for int8 calibration
  try {
    model.graph = detail::translate(traced, specs, options.output_names, options.fp16, &values);
  } catch (const ExportError& e) {
    throw ExportError(fmt::format("{}: {}", path.string(), e.what()));
  }
  describe_model(model, path, options);
  std::string quantization;
  if (options.int8 != Int8Mode::none) {
    try {
      quantization = detail::apply_int8(model, traced, values, inputs, options);
    } catch (const ExportError& e) {
      throw ExportError(fmt::format("{}: {}", path.string(), e.what()));
    }
  }
  return finish_export(model, path, options, quantization);
}

ExportReport export_model(torch::nn::AnyModule& module,
                          const std::vector<at::Tensor>& example_inputs,
                          const std::filesystem::path& path, const ExportOptions& options) {
  LATHE_CHECK(example_inputs.size() <= 3, ExportError,
              "{}: a type-erased module's forward takes at most 3 tensors here; use the "
              "ForwardFn overload",
              path.string());
  const ForwardFn forward = [&](const std::vector<at::Tensor>& in) {
    torch::nn::AnyValue out = in.size() == 1   ? module.any_forward(in[0])
                              : in.size() == 2 ? module.any_forward(in[0], in[1])
                                               : module.any_forward(in[0], in[1], in[2]);
    return std::vector<at::Tensor>{out.get<at::Tensor>()};
  };
  return export_model(*module.ptr(), forward, example_inputs, path, options);
}

std::filesystem::path write_triton_repository(const ExportReport& report,
                                              const std::filesystem::path& repo,
                                              const std::string& model_name,
                                              int64_t max_batch_size) {
  const auto io_block = [&](const char* kind, const std::vector<ExportReport::Io>& ios) {
    std::string text = fmt::format("{} [\n", kind);
    for (size_t i = 0; i < ios.size(); ++i) {
      const auto& io = ios[i];
      LATHE_CHECK(!io.shape.empty() && io.shape[0] == "batch", ExportError,
                  "{}: Triton needs axis 0 of '{}' to be the dynamic batch axis (its shape is "
                  "[{}]); export with --dynamic batch",
                  report.path.string(), io.name, fmt::join(io.shape, ", "));
      std::vector<std::string> dims;
      for (size_t d = 1; d < io.shape.size(); ++d) {
        const std::string& s = io.shape[d];
        dims.push_back(!s.empty() && std::isdigit(static_cast<unsigned char>(s[0])) ? s : "-1");
      }
      std::string type = io.dtype;
      for (auto& c : type) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      if (type == "FLOAT") type = "FP32";
      if (type == "FLOAT16") type = "FP16";
      if (type == "DOUBLE") type = "FP64";
      if (type == "BFLOAT16") type = "BF16";
      // A tensor of the batch axis alone ([batch], e.g. a label per record) is given to Triton as
      // dims [1] reshaped to [], as its model configuration documents.
      const std::string reshape = dims.empty() ? "\n    reshape: { shape: [ ] }" : "";
      if (dims.empty()) dims.push_back("1");
      text += fmt::format(
          "  {{\n    name: \"{}\"\n    data_type: TYPE_{}\n    dims: [ {} ]{}\n  }}{}\n", io.name,
          type, fmt::join(dims, ", "), reshape, i + 1 < ios.size() ? "," : "");
    }
    return text + "]\n";
  };
  const std::filesystem::path dir = repo / model_name;
  std::filesystem::create_directories(dir / "1");
  const std::string inputs = io_block("input", report.inputs);
  const std::string outputs = io_block("output", report.outputs);
  const std::string config = fmt::format(
      "name: \"{}\"\nbackend: \"onnxruntime\"\nmax_batch_size: {}\n{}{}"
      "dynamic_batching {{ }}\n",
      model_name, max_batch_size, inputs, outputs);
  std::ifstream src(report.path, std::ios::binary);
  LATHE_CHECK(src, IoError, "{}: cannot read the exported model", report.path.string());
  const std::string bytes((std::istreambuf_iterator<char>(src)), std::istreambuf_iterator<char>());
  write_file_atomic(dir / "1" / "model.onnx", bytes);
  write_file_atomic(dir / "config.pbtxt", config);
  return dir;
}

}  // namespace lathe::onnx
