// Int8 rewrites of lathe's ONNX IR: dynamic (MatMulInteger) and static (QDQ) quantization of the
// nodes that carry weights; weights are quantized here, per output channel.
#include "lathe/onnx/quantize.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include "lathe/core/error.h"

namespace lathe::onnx {
namespace {

at::Tensor to_tensor(const TensorData& d) {  // a copy of a float initializer's values
  LATHE_CHECK(d.dtype == DType::Float, ExportError,
              "int8: weight '{}' is {}, not float (int8 needs a float32 export)", d.name,
              dtype_name(d.dtype));
  return at::from_blob(const_cast<char*>(d.raw.data()), d.dims, at::kFloat).clone();
}

TensorData from_tensor(const at::Tensor& t, const std::string& name, DType dtype) {
  const at::Tensor c = t.contiguous();
  TensorData d;
  d.name = name;
  d.dtype = dtype;
  d.dims = c.sizes().vec();
  d.raw.assign(static_cast<const char*>(c.data_ptr()), c.nbytes());
  return d;
}

int64_t int_attribute(const Node& n, const std::string& name, int64_t fallback) {
  for (const Attribute& a : n.attributes)
    if (a.name == name) return std::get<int64_t>(a.value);
  return fallback;
}
float float_attribute(const Node& n, const std::string& name, float fallback) {
  for (const Attribute& a : n.attributes)
    if (a.name == name) return std::get<float>(a.value);
  return fallback;
}

/// A weight as the node uses it, [K, N] for MatMul-like nodes or [C_out, ...] for Conv, with the
/// axis of its output channels.
struct Weight {
  at::Tensor values;
  int64_t axis = 0;
  std::string name;  ///< the initializer it came from
};

/// Int8 symmetric per-channel quantization along `axis`: q = round(w / s), s = max|w| / 127.
struct QuantizedWeight {
  at::Tensor q;       // int8, w's shape
  at::Tensor scales;  // float [C]
};
QuantizedWeight quantize_weight(const Weight& w) {
  const at::Tensor moved = w.values.movedim(w.axis, 0).reshape({w.values.size(w.axis), -1});
  at::Tensor scales = std::get<0>(moved.abs().max(1)) / 127.0f;  // [C]
  scales = at::where(scales > 0, scales, at::ones_like(scales));
  std::vector<int64_t> shape(static_cast<size_t>(w.values.dim()), 1);
  shape[static_cast<size_t>(w.axis)] = -1;
  const at::Tensor q = at::round(w.values / scales.reshape(shape)).clamp(-127, 127).to(at::kChar);
  return {q, scales};
}

/// The graph's names and who makes and reads them; adds nodes and initializers with fresh names.
class Rewriter {
 public:
  explicit Rewriter(Graph& g) : g_(g) {
    for (const auto& i : g.inputs) taken_.insert(i.name);
    for (size_t i = 0; i < g.initializers.size(); ++i) {
      initializer_[g.initializers[i].name] = i;
      taken_.insert(g.initializers[i].name);
    }
    for (size_t i = 0; i < g.nodes.size(); ++i)
      for (const auto& o : g.nodes[i].outputs) {
        producer_[o] = i;
        taken_.insert(o);
      }
  }

  const TensorData* initializer(const std::string& name) const {
    auto it = initializer_.find(name);
    return it == initializer_.end() ? nullptr : &g_.initializers[it->second];
  }

  /// The value of `name` when it is a weight: a float rank>=2 initializer, or (with
  /// `follow_transpose`) the Transpose (perm 1,0) of a rank-2 one, as lathe writes linear layers
  /// ([out, in] → [in, out]).
  std::optional<Weight> weight(const std::string& name, bool follow_transpose) const {
    if (const TensorData* t = initializer(name); t && t->dtype == DType::Float && t->dims.size() >= 2)
      return Weight{to_tensor(*t), 0, t->name};
    auto p = producer_.find(name);
    if (p == producer_.end() || !follow_transpose) return std::nullopt;
    const Node& n = g_.nodes[p->second];
    if (n.op_type != "Transpose" || n.inputs.size() != 1) return std::nullopt;
    const TensorData* t = initializer(n.inputs[0]);
    if (!t || t->dtype != DType::Float || t->dims.size() != 2) return std::nullopt;
    for (const Attribute& a : n.attributes)
      if (a.name == "perm" && std::get<std::vector<int64_t>>(a.value) != std::vector<int64_t>{1, 0})
        return std::nullopt;
    return Weight{to_tensor(*t).t().contiguous(), 1, t->name};  // W[out, in] → [in, out]
  }

  std::string fresh(const std::string& hint) {
    std::string name = hint;
    for (int64_t i = 1; !taken_.insert(name).second; ++i) name = fmt::format("{}_{}", hint, i);
    return name;
  }
  std::string add_initializer(const at::Tensor& t, const std::string& hint, DType dtype) {
    TensorData d = from_tensor(t, fresh(hint), dtype);
    g_.initializers.push_back(std::move(d));
    return g_.initializers.back().name;
  }
  /// The initializers of a quantized weight: its int8 values, per-channel scales, zero points.
  std::array<std::string, 3> add_weight(const QuantizedWeight& w, const std::string& hint) {
    return {add_initializer(w.q, hint + "_quantized", DType::Int8),
            add_initializer(w.scales, hint + "_scale", DType::Float),
            add_initializer(at::zeros_like(w.scales, at::kChar), hint + "_zero_point",
                            DType::Int8)};
  }
  /// Queues a node for the spot before the node being rewritten; returns its first output.
  std::vector<std::string> emit(const std::string& op, std::vector<std::string> inputs,
                                size_t outputs, const std::string& hint,
                                std::vector<Attribute> attrs = {}) {
    Node n;
    n.op_type = op;
    n.inputs = std::move(inputs);
    n.attributes = std::move(attrs);
    n.name = fresh(hint + "/" + op);
    for (size_t i = 0; i < outputs; ++i) n.outputs.push_back(fresh(hint + "_" + op));
    pending_.push_back(std::move(n));
    return pending_.back().outputs;
  }
  std::string emit1(const std::string& op, std::vector<std::string> inputs, const std::string& hint,
                    std::vector<Attribute> attrs = {}) {
    return emit(op, std::move(inputs), 1, hint, std::move(attrs))[0];
  }
  /// A node that writes `output` (an existing name) itself.
  void emit_to(const std::string& output, const std::string& op, std::vector<std::string> inputs,
               const std::string& name, std::vector<Attribute> attrs = {}) {
    Node n;
    n.op_type = op;
    n.inputs = std::move(inputs);
    n.attributes = std::move(attrs);
    n.outputs = {output};
    n.name = fresh(name);
    pending_.push_back(std::move(n));
  }

  /// Rebuilds the node list: every node, preceded by what was emitted for it (`rewrite` returns
  /// false to keep a node as it is, true when the emitted nodes replace it); then drops the
  /// nodes and initializers nothing reads any more.
  template <typename F>
  void rewrite(F&& rewrite) {
    std::vector<Node> out;
    for (Node& n : g_.nodes) {
      pending_.clear();
      const bool replaced = rewrite(n);  // reads the graph as it was (producers by index)
      for (Node& p : pending_) out.push_back(std::move(p));
      if (!replaced) out.push_back(n);
    }
    g_.nodes = std::move(out);
    prune();
  }

 private:
  void prune() {
    std::set<std::string> read;
    for (const auto& o : g_.outputs) read.insert(o.name);
    std::vector<Node> kept;
    for (auto it = g_.nodes.rbegin(); it != g_.nodes.rend(); ++it) {
      const bool used = std::any_of(it->outputs.begin(), it->outputs.end(),
                                    [&](const std::string& o) { return read.count(o) > 0; });
      if (!used) continue;
      read.insert(it->inputs.begin(), it->inputs.end());
      kept.push_back(std::move(*it));
    }
    g_.nodes.assign(std::make_move_iterator(kept.rbegin()), std::make_move_iterator(kept.rend()));
    std::vector<TensorData> inits;
    for (auto& t : g_.initializers)
      if (read.count(t.name)) inits.push_back(std::move(t));
    g_.initializers = std::move(inits);
  }

  Graph& g_;
  std::set<std::string> taken_;
  std::unordered_map<std::string, size_t> initializer_, producer_;
  std::vector<Node> pending_;
};

/// The weight a MatMul / Gemm node multiplies by, as [K, N] with channels on axis 1; nullopt when
/// the node is not one lathe quantizes (its weight is computed, or Gemm scales or transposes A).
std::optional<Weight> matmul_weight(const Rewriter& r, const Node& n) {
  if (n.op_type == "MatMul" && n.inputs.size() == 2) {
    auto w = r.weight(n.inputs[1], /*follow_transpose=*/true);
    if (w && w->values.dim() == 2) {
      w->axis = 1;
      return w;
    }
    return std::nullopt;
  }
  if (n.op_type == "Gemm" && n.inputs.size() >= 2 && int_attribute(n, "transA", 0) == 0 &&
      float_attribute(n, "alpha", 1.0f) == 1.0f && float_attribute(n, "beta", 1.0f) == 1.0f) {
    auto w = r.weight(n.inputs[1], /*follow_transpose=*/true);
    if (!w || w->values.dim() != 2) return std::nullopt;
    if (int_attribute(n, "transB", 0) == 1) w->values = w->values.t().contiguous();
    w->axis = 1;
    return w;
  }
  return std::nullopt;
}

/// An embedding table a Gather reads rows of: [V, H], channels (the H columns) on axis 1.
std::optional<Weight> embedding(const Rewriter& r, const Node& n) {
  if (n.op_type != "Gather" || int_attribute(n, "axis", 0) != 0) return std::nullopt;
  const TensorData* t = r.initializer(n.inputs[0]);
  if (!t || t->dtype != DType::Float || t->dims.size() != 2) return std::nullopt;
  return Weight{to_tensor(*t), 1, t->name};
}

/// Conv's weight [C_out, C_in/g, k...] with channels on axis 0.
std::optional<Weight> conv_weight(const Rewriter& r, const Node& n) {
  if (n.op_type != "Conv" || n.inputs.size() < 2) return std::nullopt;
  auto w = r.weight(n.inputs[1], /*follow_transpose=*/false);
  if (!w || w->values.dim() < 3) return std::nullopt;
  w->axis = 0;
  return w;
}

/// The node's bias, when it is a float 1-D initializer of `channels` elements.
std::optional<at::Tensor> bias(const Rewriter& r, const Node& n, int64_t channels) {
  if (n.inputs.size() < 3 || n.inputs[2].empty()) return std::nullopt;
  const TensorData* t = r.initializer(n.inputs[2]);
  if (!t || t->dtype != DType::Float || t->dims != std::vector<int64_t>{channels})
    return std::nullopt;
  return to_tensor(*t);
}

/// QuantizeLinear → DequantizeLinear of `x` into `out`, uint8 asymmetric over the calibrated
/// `range` widened to hold 0 (exactly representable, as padding needs); returns the scale.
float fake_quantize(Rewriter& r, const std::string& x, ValueRange range, const std::string& out) {
  const float lo = std::min(0.0f, range.min), hi = std::max(0.0f, range.max);
  const float scale = hi > lo ? (hi - lo) / 255.0f : 1.0f;
  const auto zero = static_cast<int64_t>(std::clamp(std::round(-lo / scale), 0.0f, 255.0f));
  const std::string s =
      r.add_initializer(at::scalar_tensor(scale, at::kFloat), x + "_scale", DType::Float);
  const std::string z =
      r.add_initializer(at::scalar_tensor(zero, at::kByte), x + "_zero_point", DType::UInt8);
  const std::string q = r.emit1("QuantizeLinear", {x, s, z}, x);
  r.emit_to(out, "DequantizeLinear", {q, s, z}, out + "/DequantizeLinear");
  return scale;
}

}  // namespace

namespace {

/// Every mode and its name: int8_mode_name and int8_mode_from_name both read this.
constexpr std::pair<Int8Mode, const char*> kInt8Modes[] = {
    {Int8Mode::none, "none"},
    {Int8Mode::automatic, "auto"},
    {Int8Mode::dynamic, "dynamic"},
    {Int8Mode::static_qdq, "static"},
};

}  // namespace

const char* int8_mode_name(Int8Mode mode) {
  for (const auto& [m, name] : kInt8Modes) {
    if (m == mode) return name;
  }
  return "?";
}

Int8Mode int8_mode_from_name(const std::string& name) {
  std::vector<std::string> offered;
  for (const auto& [m, n] : kInt8Modes) {
    if (m == Int8Mode::none) continue;  // not a mode to ask for: leave --int8 out
    if (name == n) return m;
    offered.emplace_back(n);
  }
  const std::string last = offered.back();
  offered.pop_back();
  throw ConfigError(fmt::format(
      "--int8 {}: the modes are {} and {} (write the run folder before --int8)", name,
      fmt::join(offered, ", "), last));
}

bool has_convolution(const Graph& graph) {
  return std::any_of(graph.nodes.begin(), graph.nodes.end(),
                     [](const Node& n) { return n.op_type == "Conv"; });
}

QuantizeSummary quantize_dynamic(Graph& graph) {
  QuantizeSummary summary;
  Rewriter r(graph);
  // x → (x_q, x_scale, x_zero_point), once per activation however many weights read it.
  std::map<std::string, std::vector<std::string>> quantized_inputs;
  r.rewrite([&](Node& n) {
    if (const std::optional<Weight> table = embedding(r, n)) {  // Gather rows, then dequantize
      const QuantizedWeight q = quantize_weight(*table);          // [V, H] int8, scales [H]
      const auto [wq, ws, wz] = r.add_weight(q, table->name);
      const std::string rows =
          r.emit1("Gather", {wq, n.inputs[1]}, table->name, {{"axis", int64_t{0}}});
      r.emit_to(n.outputs[0], "DequantizeLinear", {rows, ws, wz}, n.name,
                {{"axis", int64_t{-1}}});
      ++summary.quantized[n.op_type];
      return true;
    }
    const std::optional<Weight> w = matmul_weight(r, n);
    if (!w) return false;
    const std::string& x = n.inputs[0];
    const std::string hint = w->name;
    auto it = quantized_inputs.find(x);
    if (it == quantized_inputs.end()) {
      it = quantized_inputs.emplace(x, r.emit("DynamicQuantizeLinear", {x}, 3, x)).first;
    }
    const std::string &xq = it->second[0], &xs = it->second[1], &xz = it->second[2];
    const QuantizedWeight q = quantize_weight(*w);  // [K, N] int8, scales [N]
    const auto [wq, ws, wz] = r.add_weight(q, hint);
    const std::string y32 = r.emit1("MatMulInteger", {xq, wq, xz, wz}, hint);
    const std::string yf = r.emit1("Cast", {y32}, hint, {{"to", int64_t{1}}});
    const std::string scale = r.emit1("Mul", {xs, ws}, hint);
    const bool has_bias = n.op_type == "Gemm" && n.inputs.size() > 2 && !n.inputs[2].empty();
    if (has_bias) {
      r.emit_to(n.outputs[0], "Add", {r.emit1("Mul", {yf, scale}, hint), n.inputs[2]}, n.name);
    } else {
      r.emit_to(n.outputs[0], "Mul", {yf, scale}, n.name);
    }
    ++summary.quantized[n.op_type];
    return true;
  });
  return summary;
}

int64_t fold_batch_norms(Graph& graph) {
  std::map<std::string, int64_t> readers;
  for (const Node& n : graph.nodes)
    for (const std::string& i : n.inputs) ++readers[i];
  for (const ValueInfo& o : graph.outputs) ++readers[o.name];
  std::map<std::string, size_t> producer;
  for (size_t i = 0; i < graph.nodes.size(); ++i) producer[graph.nodes[i].outputs[0]] = i;
  std::map<std::string, const TensorData*> inits;
  for (const TensorData& t : graph.initializers) inits[t.name] = &t;
  const auto init = [&](const std::string& name) -> std::optional<at::Tensor> {
    auto it = inits.find(name);
    if (it == inits.end() || it->second->dtype != DType::Float) return std::nullopt;
    return to_tensor(*it->second);
  };
  std::vector<TensorData> added;
  std::set<size_t> folded;  // the BatchNormalization nodes merged into their Conv
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& bn = graph.nodes[i];
    if (bn.op_type != "BatchNormalization" || bn.inputs.size() != 5 || bn.outputs.size() != 1 ||
        int_attribute(bn, "training_mode", 0) != 0 || readers[bn.inputs[0]] != 1)
      continue;
    auto p = producer.find(bn.inputs[0]);
    if (p == producer.end()) continue;
    Node& conv = graph.nodes[p->second];
    if (conv.op_type != "Conv") continue;
    const auto w = init(conv.inputs[1]);
    const auto gamma = init(bn.inputs[1]), beta = init(bn.inputs[2]);
    const auto mean = init(bn.inputs[3]), var = init(bn.inputs[4]);
    if (!w || !gamma || !beta || !mean || !var) continue;
    std::optional<at::Tensor> b = at::zeros({w->size(0)}, at::kFloat);
    if (conv.inputs.size() > 2 && !conv.inputs[2].empty()) b = init(conv.inputs[2]);
    if (!b) continue;
    // y = γ·(conv(x) + b − μ)/√(σ² + ε) + β = conv'(x) with W·f per output channel, f = γ/√(σ²+ε).
    const at::Tensor f = *gamma / at::sqrt(*var + float_attribute(bn, "epsilon", 1e-5f));  // [C]
    std::vector<int64_t> shape(static_cast<size_t>(w->dim()), 1);
    shape[0] = -1;
    const std::string name = conv.inputs[1] + "_folded";
    added.push_back(from_tensor(*w * f.reshape(shape), name, DType::Float));
    added.push_back(from_tensor((*b - *mean) * f + *beta, name + "_bias", DType::Float));
    conv.inputs.resize(3);
    conv.inputs[1] = name;
    conv.inputs[2] = name + "_bias";
    conv.outputs[0] = bn.outputs[0];
    folded.insert(i);
  }
  std::vector<Node> kept;
  for (size_t i = 0; i < graph.nodes.size(); ++i)
    if (!folded.count(i)) kept.push_back(std::move(graph.nodes[i]));
  graph.nodes = std::move(kept);
  for (auto& t : added) graph.initializers.push_back(std::move(t));
  // Initializers only the folded nodes read go.
  std::set<std::string> read;
  for (const Node& n : graph.nodes) read.insert(n.inputs.begin(), n.inputs.end());
  std::vector<TensorData> inits_kept;
  for (auto& t : graph.initializers)
    if (read.count(t.name)) inits_kept.push_back(std::move(t));
  graph.initializers = std::move(inits_kept);
  return static_cast<int64_t>(folded.size());
}

std::vector<std::string> static_activations(const Graph& graph) {
  Graph copy = graph;  // Rewriter reads only; weights are looked up, not changed
  Rewriter r(copy);
  std::vector<std::string> names;
  for (const Node& n : graph.nodes) {
    if (!(matmul_weight(r, n) || conv_weight(r, n))) continue;
    for (const std::string& v : {n.inputs[0], n.outputs[0]})
      if (std::find(names.begin(), names.end(), v) == names.end()) names.push_back(v);
  }
  return names;
}

QuantizeSummary quantize_static(Graph& graph, const ValueRanges& ranges) {
  QuantizeSummary summary;
  Rewriter r(graph);
  struct Activation {
    std::string dequantized;
    float scale;
  };
  std::map<std::string, Activation> activations;  // x → its QuantizeLinear → DequantizeLinear
  r.rewrite([&](Node& n) {
    std::optional<Weight> w = matmul_weight(r, n);
    const bool conv = !w;
    if (conv) w = conv_weight(r, n);
    if (!w) return false;
    const std::string x = n.inputs[0];
    const std::string hint = w->name;
    // The activation: uint8 asymmetric over its calibrated range (0 always representable).
    std::optional<Activation> act;
    if (auto it = activations.find(x); it != activations.end()) {
      act = it->second;
    } else if (auto range = ranges.find(x); range != ranges.end()) {
      const std::string dequantized = r.fresh(x + "_DequantizeLinear");
      act = Activation{dequantized, fake_quantize(r, x, range->second, dequantized)};
      activations.emplace(x, *act);
      ++summary.activations;
    }
    if (!act) ++summary.weight_only;
    // The weight: int8 symmetric per output channel.
    const QuantizedWeight q = quantize_weight(*w);
    const auto [wq, ws, wz] = r.add_weight(q, hint);
    Node rewritten = n;
    rewritten.inputs[0] = act ? act->dequantized : x;
    rewritten.inputs[1] =
        r.emit1("DequantizeLinear", {wq, ws, wz}, hint, {{"axis", w->axis}});
    if (n.op_type == "Gemm") {  // the weight is now [K, N]
      rewritten.attributes.erase(
          std::remove_if(rewritten.attributes.begin(), rewritten.attributes.end(),
                         [](const Attribute& a) { return a.name == "transB"; }),
          rewritten.attributes.end());
    }
    // The bias: int32 at scale x_scale · w_scale, zero point 0 (as QLinearConv expects).
    const int64_t channels = q.scales.size(0);
    if (const auto b = bias(r, n, channels); b && act) {
      const at::Tensor scales = q.scales * act->scale;
      const at::Tensor bq =
          at::round(*b / scales).clamp(std::numeric_limits<int32_t>::min(),
                                       std::numeric_limits<int32_t>::max()).to(at::kInt);
      const std::string bqn = r.add_initializer(bq, n.inputs[2] + "_quantized", DType::Int32);
      const std::string bs = r.add_initializer(scales, n.inputs[2] + "_scale", DType::Float);
      rewritten.inputs[2] = r.emit1("DequantizeLinear", {bqn, bs}, n.inputs[2], {{"axis", int64_t{0}}});
    }
    // The result too, when calibrated: DequantizeLinear → op → QuantizeLinear is what runtimes
    // fuse into one integer operator (QLinearConv).
    if (auto range = ranges.find(n.outputs[0]); range != ranges.end() && act) {
      const std::string raw = r.fresh(n.outputs[0] + "_float");
      r.emit_to(raw, n.op_type, rewritten.inputs, n.name, rewritten.attributes);
      fake_quantize(r, raw, range->second, n.outputs[0]);
      ++summary.results;
      ++summary.quantized[n.op_type];
      return true;
    }
    r.emit_to(n.outputs[0], n.op_type, rewritten.inputs, n.name, rewritten.attributes);
    ++summary.quantized[n.op_type];
    return true;
  });
  return summary;
}

}  // namespace lathe::onnx
