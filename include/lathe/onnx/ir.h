// A small, torch-free picture of an ONNX model (graph, nodes, initializers) that the exporter
// builds and the proto writer turns into a checked ModelProto.
//
// It exists because the torch wheel ships protobuf 3.13 headers while Debian's ONNX library is
// built on protobuf 3.21: code that sees torch's include folder cannot include onnx's .pb.h.
// So the exporter (torch side) fills these plain structs and the writer (ONNX side, compiled
// without torch) serialises them.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace lathe::onnx {

/// Element types we emit; the values are ONNX's TensorProto.DataType codes.
enum class DType : int32_t {
  Float = 1,
  UInt8 = 2,
  Int8 = 3,
  String = 8,
  Int32 = 6,
  Int64 = 7,
  Bool = 9,
  Float16 = 10,
  Double = 11,
  BFloat16 = 16,
};

/// "float", "int64", ... for messages and config.pbtxt.
const char* dtype_name(DType t);

/// A constant tensor: its raw little-endian bytes, row-major; a String tensor holds its
/// elements in `strings` instead (ONNX stores strings element by element, never as raw bytes).
struct TensorData {
  std::string name;
  DType dtype = DType::Float;
  std::vector<int64_t> dims;
  std::string raw;
  std::vector<std::string> strings;
};

/// A node attribute: int, float, string, ints, floats, strings or a tensor.
struct Attribute {
  using Value = std::variant<int64_t, float, std::string, std::vector<int64_t>,
                             std::vector<float>, TensorData, std::vector<std::string>>;
  std::string name;
  Value value;
};

/// One operator application: Conv(x, w, b) -> y.
struct Node {
  std::string op_type;
  std::vector<std::string> inputs;  ///< "" for an omitted optional input
  std::vector<std::string> outputs;
  std::vector<Attribute> attributes;
  std::string name;  ///< unique; carries the module path it came from
  std::string domain;  ///< "" for the default ONNX domain, "ai.onnx.ml" for the ML operators
};

/// A dimension: a fixed size or a named symbol ("batch", "seq").
using Dim = std::variant<int64_t, std::string>;

/// A graph input or output: name, element type and shape.
struct ValueInfo {
  std::string name;
  DType dtype = DType::Float;
  std::vector<Dim> shape;
};

struct Graph {
  std::string name = "lathe";
  std::vector<Node> nodes;
  std::vector<TensorData> initializers;
  std::vector<ValueInfo> inputs;
  std::vector<ValueInfo> outputs;
};

struct Model {
  Graph graph;
  int64_t opset = 17;
  /// Opsets of further domains the nodes use, e.g. {"ai.onnx.ml", 3}.
  std::vector<std::pair<std::string, int64_t>> domain_opsets;
  int64_t ir_version = 8;
  std::string producer_name = "lathe";
  std::string producer_version;
  int64_t model_version = 1;
  std::string doc_string;
  /// metadata_props, in order; keys must be unique.
  std::vector<std::pair<std::string, std::string>> metadata;
};

/// Builds the ModelProto, runs ONNX's checker and strict shape inference (error_mode 1, type
/// checks on), and returns the serialised bytes. Failures are ExportErrors carrying ONNX's
/// message, prefixed by `what` (the file being exported).
std::string serialize_checked(const Model& model, const std::string& what);

/// The shapes ONNX's shape inference gives the graph outputs of `bytes` (a serialised model), in
/// output order; a symbolic dimension comes back as its name. Used by tests and by --triton.
std::vector<std::vector<Dim>> inferred_output_shapes(const std::string& bytes);

}  // namespace lathe::onnx
