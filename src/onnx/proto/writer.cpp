// The ONNX side of the exporter: lathe's IR -> ModelProto, checked and shape-inferred in process.
// Compiled WITHOUT torch's include folder (torch ships protobuf 3.13 headers; Debian's onnx
// library is built on protobuf 3.21), see CMakeLists.txt's lathe_onnx_proto target.
#include <exception>
#include <string>

#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include "lathe/core/error.h"
#include "lathe/onnx/ir.h"

namespace lathe::onnx {
namespace {

void fill_tensor(::onnx::TensorProto& t, const TensorData& d) {
  t.set_name(d.name);
  t.set_data_type(static_cast<int32_t>(d.dtype));
  for (int64_t dim : d.dims) t.add_dims(dim);
  if (d.dtype == DType::String) {
    for (const auto& s : d.strings) t.add_string_data(s);
  } else {
    t.set_raw_data(d.raw);
  }
}

void fill_attribute(::onnx::AttributeProto& a, const Attribute& attr) {
  a.set_name(attr.name);
  std::visit(
      [&](const auto& v) {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, int64_t>) {
          a.set_type(::onnx::AttributeProto::INT);
          a.set_i(v);
        } else if constexpr (std::is_same_v<V, float>) {
          a.set_type(::onnx::AttributeProto::FLOAT);
          a.set_f(v);
        } else if constexpr (std::is_same_v<V, std::string>) {
          a.set_type(::onnx::AttributeProto::STRING);
          a.set_s(v);
        } else if constexpr (std::is_same_v<V, std::vector<int64_t>>) {
          a.set_type(::onnx::AttributeProto::INTS);
          for (int64_t i : v) a.add_ints(i);
        } else if constexpr (std::is_same_v<V, std::vector<float>>) {
          a.set_type(::onnx::AttributeProto::FLOATS);
          for (float f : v) a.add_floats(f);
        } else if constexpr (std::is_same_v<V, std::vector<std::string>>) {
          a.set_type(::onnx::AttributeProto::STRINGS);
          for (const auto& s : v) a.add_strings(s);
        } else {
          a.set_type(::onnx::AttributeProto::TENSOR);
          fill_tensor(*a.mutable_t(), v);
        }
      },
      attr.value);
}

void fill_value_info(::onnx::ValueInfoProto& vi, const ValueInfo& v) {
  vi.set_name(v.name);
  auto* tensor_type = vi.mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(static_cast<int32_t>(v.dtype));
  auto* shape = tensor_type->mutable_shape();
  for (const Dim& d : v.shape) {
    auto* dim = shape->add_dim();
    if (const auto* fixed = std::get_if<int64_t>(&d)) {
      dim->set_dim_value(*fixed);
    } else {
      dim->set_dim_param(std::get<std::string>(d));
    }
  }
}

::onnx::ModelProto to_proto(const Model& m) {
  ::onnx::ModelProto proto;
  proto.set_ir_version(m.ir_version);
  proto.set_producer_name(m.producer_name);
  proto.set_producer_version(m.producer_version);
  proto.set_model_version(m.model_version);
  proto.set_doc_string(m.doc_string);
  auto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(m.opset);
  for (const auto& [domain, version] : m.domain_opsets) {
    auto* extra = proto.add_opset_import();
    extra->set_domain(domain);
    extra->set_version(version);
  }
  for (const auto& [key, value] : m.metadata) {
    auto* prop = proto.add_metadata_props();
    prop->set_key(key);
    prop->set_value(value);
  }
  auto* g = proto.mutable_graph();
  g->set_name(m.graph.name);
  for (const TensorData& init : m.graph.initializers) fill_tensor(*g->add_initializer(), init);
  for (const ValueInfo& in : m.graph.inputs) fill_value_info(*g->add_input(), in);
  for (const ValueInfo& out : m.graph.outputs) fill_value_info(*g->add_output(), out);
  for (const Node& n : m.graph.nodes) {
    auto* node = g->add_node();
    node->set_op_type(n.op_type);
    node->set_name(n.name);
    if (!n.domain.empty()) node->set_domain(n.domain);
    for (const auto& in : n.inputs) node->add_input(in);
    for (const auto& out : n.outputs) node->add_output(out);
    for (const auto& attr : n.attributes) fill_attribute(*node->add_attribute(), attr);
  }
  return proto;
}

}  // namespace

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float: return "float";
    case DType::UInt8: return "uint8";
    case DType::Int8: return "int8";
    case DType::String: return "string";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::Bool: return "bool";
    case DType::Float16: return "float16";
    case DType::Double: return "double";
    case DType::BFloat16: return "bfloat16";
  }
  return "unknown";
}

std::string serialize_checked(const Model& model, const std::string& what) {
  ::onnx::ModelProto proto = to_proto(model);
  try {
    ::onnx::checker::check_model(proto);
  } catch (const std::exception& e) {
    throw ExportError(what + ": the ONNX checker refused the exported graph: " + e.what());
  }
  // Strict shape inference on a copy: error_mode 1 throws on any node whose shapes or types
  // do not agree; check_type compares declared and inferred element types.
  ::onnx::ModelProto inferred = proto;
  try {
    ::onnx::shape_inference::InferShapes(inferred, ::onnx::OpSchemaRegistry::Instance(),
                                         ::onnx::ShapeInferenceOptions(true, 1));
  } catch (const std::exception& e) {
    throw ExportError(what + ": ONNX shape inference failed on the exported graph: " + e.what());
  }
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) {
    throw ExportError(what + ": could not serialise the ONNX model (is it over protobuf's 2 GB?)");
  }
  return bytes;
}

std::vector<std::vector<Dim>> inferred_output_shapes(const std::string& bytes) {
  ::onnx::ModelProto proto;
  if (!proto.ParseFromString(bytes)) throw ExportError("inferred_output_shapes: not an ONNX model");
  ::onnx::shape_inference::InferShapes(proto, ::onnx::OpSchemaRegistry::Instance(),
                                       ::onnx::ShapeInferenceOptions(true, 1));
  std::vector<std::vector<Dim>> shapes;
  for (const auto& out : proto.graph().output()) {
    std::vector<Dim> shape;
    for (const auto& d : out.type().tensor_type().shape().dim()) {
      if (d.has_dim_value()) {
        shape.emplace_back(d.dim_value());
      } else {
        shape.emplace_back(d.dim_param());
      }
    }
    shapes.push_back(std::move(shape));
  }
  return shapes;
}

}  // namespace lathe::onnx
