// Int8 quantization of an exported graph (lathe's ONNX IR), with standard opset-17 operators only
// (no com.microsoft contrib ops), so that any ONNX runtime takes the file:
//  - dynamic: MatMul / Gemm whose weight is an initializer → DynamicQuantizeLinear(x) →
//    MatMulInteger(x_q, W_q) → Cast → Mul(x_scale · w_scale) (→ Add bias), as onnxruntime's
//    quantize_dynamic writes it; weights int8 symmetric per output channel (MatMulInteger takes a
//    per-column zero point), activations uint8 per tensor at run time; embedding tables (a Gather
//    of a float initializer) become int8 per column, Gather → DequantizeLinear.
//  - static (QDQ): BatchNormalization folded into the Conv before it; QuantizeLinear →
//    DequantizeLinear on the float inputs and results of Conv, Gemm and MatMul (uint8 asymmetric
//    per tensor, from calibrated ranges), DequantizeLinear on their weights (int8 symmetric per
//    output channel) and on their biases (int32 at scale x_scale · w_scale).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lathe/onnx/ir.h"

namespace lathe::onnx {

/// How to quantize: none, dynamic, static (QDQ with calibration), or automatic (static when the
/// graph has a Conv, dynamic otherwise).
enum class Int8Mode { none, automatic, dynamic, static_qdq };

/// "none", "auto", "dynamic", "static".
const char* int8_mode_name(Int8Mode mode);

/// The mode a user names (`--int8 dynamic`): "auto", "dynamic" or "static", read from the same
/// table int8_mode_name uses; a ConfigError naming the modes for anything else.
Int8Mode int8_mode_from_name(const std::string& name);

/// The range a float tensor took over the calibration inputs.
struct ValueRange {
  float min = 0;
  float max = 0;
};
/// Ranges by ONNX tensor name.
using ValueRanges = std::map<std::string, ValueRange>;

/// What a quantization pass did.
struct QuantizeSummary {
  std::map<std::string, int64_t> quantized;  ///< op type → nodes rewritten
  int64_t activations = 0;  ///< static: activations given QuantizeLinear / DequantizeLinear
  int64_t results = 0;      ///< static: node results given QuantizeLinear / DequantizeLinear
  int64_t weight_only = 0;  ///< static: nodes whose input had no range (weights quantized only)
};

/// Whether the graph has a Conv node (Int8Mode::automatic picks static then).
bool has_convolution(const Graph& graph);

/// Dynamic quantization of every MatMul / Gemm whose weight is a float rank-2 initializer (or the
/// Transpose of one, as lathe writes linear layers on 3-D inputs), and of every embedding table
/// (a Gather of a float rank-2 initializer on axis 0). Other nodes stay float.
QuantizeSummary quantize_dynamic(Graph& graph);

/// Merges each BatchNormalization that alone reads a Conv's result into that Conv (weights and
/// bias scaled per output channel, exact up to rounding), so that a static int8 Conv's result
/// is the normalised one; returns how many were merged. Run before static_activations.
int64_t fold_batch_norms(Graph& graph);

/// The float activations (and results) quantize_static quantizes: the data inputs of Conv, Gemm and MatMul
/// nodes with an initializer weight and those nodes' results, in graph order.
std::vector<std::string> static_activations(const Graph& graph);

/// Static QDQ quantization of Conv, Gemm and MatMul nodes with an initializer weight; an input
/// without an entry in `ranges` stays float (its node gets weight quantization only). A result
/// with a range gets QuantizeLinear → DequantizeLinear too, so that DequantizeLinear → op →
/// QuantizeLinear runs as one integer operator (onnxruntime: QLinearConv, QGemm).
QuantizeSummary quantize_static(Graph& graph, const ValueRanges& ranges);

}  // namespace lathe::onnx
