// ATen graph → ONNX opset 17: one translation per ATen operation, sizes that follow the dynamic
// axes computed at run time from the inputs' shapes (see src/onnx/trace.h).
#include "src/onnx/translate.h"

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include <ATen/ATen.h>
#include <torch/csrc/jit/ir/ir.h>

#include "lathe/core/error.h"

namespace lathe::onnx::detail {
namespace jit = torch::jit;

namespace {

DType to_onnx(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::Float;
    case at::kDouble: return DType::Double;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    case at::kLong: return DType::Int64;
    case at::kInt: return DType::Int32;
    case at::kBool: return DType::Bool;
    case at::kByte: return DType::UInt8;
    case at::kChar: return DType::Int8;
    default:
      throw ExportError(fmt::format("tensors of type {} cannot be exported to ONNX",
                                    c10::toString(t)));
  }
}

TensorData tensor_data(const at::Tensor& t, std::string name, DType dtype) {
  const at::Tensor c = t.detach().to(at::kCPU).contiguous();
  TensorData d;
  d.name = std::move(name);
  d.dtype = dtype;
  d.dims = c.sizes().vec();
  d.raw.assign(static_cast<const char*>(c.data_ptr()), c.nbytes());
  return d;
}

at::ScalarType to_torch(DType dt) {
  switch (dt) {
    case DType::Float: return at::kFloat;
    case DType::Float16: return at::kHalf;
    case DType::Double: return at::kDouble;
    case DType::BFloat16: return at::kBFloat16;
    case DType::Int64: return at::kLong;
    case DType::Int32: return at::kInt;
    case DType::Bool: return at::kBool;
    case DType::UInt8: return at::kByte;
    case DType::Int8: return at::kChar;
    case DType::String: break;  // no torch dtype; the translator never makes string tensors
  }
  throw ExportError(fmt::format("internal: no torch dtype for ONNX {}", dtype_name(dt)));
}

/// The `value` attribute of ConstantOfShape: a one-element tensor of `dt`.
TensorData fill_value(double v, DType dt) {
  return tensor_data(at::full({1}, v, at::TensorOptions().dtype(to_torch(dt))), "value", dt);
}

int64_t norm_axis(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

class Translator;
using Handler = std::function<void(Translator&, jit::Node*)>;
const std::map<std::string, Handler>& handlers();

/// Emits the ONNX graph node by node; keeps the ONNX name of every traced tensor value.
class Translator {
 public:
  Translator(const TracedGraph& tg, bool fp16) : tg_(tg), fp16_(fp16) {}

  Graph graph;

  // ---- names and types ----
  const TracedGraph& traced() const { return tg_; }
  /// The ONNX type of a traced tensor value (float becomes float16 in an fp16 export).
  DType dtype(const jit::Value* v) const {
    auto t = v->type()->cast<c10::TensorType>();
    LATHE_CHECK(t && t->scalarType(), ExportError, "{}: value '%{}' has no known element type",
                where_, v->debugName());
    return compute(to_onnx(*t->scalarType()));
  }
  DType compute(DType t) const { return fp16_ && t == DType::Float ? DType::Float16 : t; }
  int64_t rank(const jit::Value* v) const { return static_cast<int64_t>(shape(v).size()); }
  const SymShape& shape(const jit::Value* v) const {
    auto it = tg_.shapes.find(v);
    LATHE_CHECK(it != tg_.shapes.end(), ExportError, "{}: value '%{}' has no known shape", where_,
                v->debugName());
    return it->second;
  }
  /// A fixed size of `v` (its base value when it is dynamic).
  int64_t size(const jit::Value* v, int64_t dim) const {
    const SymShape& s = shape(v);
    const SymSize& d = s.at(static_cast<size_t>(norm_axis(dim, static_cast<int64_t>(s.size()))));
    LATHE_CHECK(!d.dynamic(), ExportError,
                "{}: needs a fixed size for dimension {} of '%{}', but it follows a dynamic axis",
                where_, dim, v->debugName());
    return d.j;
  }

  bool is_none(const jit::Value* v) const { return v->type()->kind() == c10::TypeKind::NoneType; }
  c10::IValue constant(const jit::Value* v) const {
    if (v->node()->kind() == c10::prim::ListConstruct) {
      std::vector<int64_t> ints;
      for (const jit::Value* e : v->node()->inputs()) ints.push_back(constant(e).toInt());
      return c10::IValue(ints);
    }
    auto iv = jit::toIValue(v);
    LATHE_CHECK(iv.has_value(), ExportError,
                "{}: argument '%{}' must be a constant (it is computed by the forward)", where_,
                v->debugName());
    return *iv;
  }
  int64_t int_arg(const jit::Value* v) const { return constant(v).toInt(); }
  double double_arg(const jit::Value* v) const { return constant(v).toScalar().toDouble(); }
  bool bool_arg(const jit::Value* v) const { return constant(v).toBool(); }
  std::vector<int64_t> ints_arg(const jit::Value* v) const {
    c10::IValue iv = constant(v);
    return iv.isInt() ? std::vector<int64_t>{iv.toInt()} : iv.toIntVector();
  }
  /// How each element of an int / int[] argument depends on the dynamic symbols.
  SymShape sym_ints(const jit::Value* v) const {
    if (v->node()->kind() == c10::prim::ListConstruct) {
      SymShape out;
      for (const jit::Value* e : v->node()->inputs()) {
        SymShape one = sym_ints(e);
        out.insert(out.end(), one.begin(), one.end());
      }
      return out;
    }
    auto it = tg_.ints.find(v);
    if (it != tg_.ints.end()) return it->second;
    SymShape fixed;
    for (int64_t i : ints_arg(v)) {
      SymSize one;
      one.j = i;
      fixed.push_back(one);
    }
    return fixed;
  }

  /// The ONNX name of a traced tensor value; constants become initializers on first use.
  std::string in(const jit::Value* v) {
    auto it = names_.find(v);
    if (it != names_.end()) return it->second;
    auto iv = jit::toIValue(v);
    LATHE_CHECK(iv && iv->isTensor(), ExportError, "{}: value '%{}' was never computed", where_,
                v->debugName());
    const at::Tensor t = iv->toTensor();
    auto named = tg_.parameter_names.find(v);
    std::string name = named != tg_.parameter_names.end() ? named->second : fresh("const");
    add_initializer(t, name);
    names_[v] = name;
    return name;
  }
  void set(const jit::Value* v, std::string name) { names_[v] = std::move(name); }
  /// Every traced value translated so far and its ONNX name.
  const std::unordered_map<const jit::Value*, std::string>& names() const { return names_; }

  /// A scalar operand: a tensor value's name, or a constant number as a 0-d tensor of `like`.
  std::string operand(const jit::Value* v, DType like) {
    if (v->type()->cast<c10::TensorType>()) return cast(in(v), dtype(v), like);
    return scalar(constant(v).toScalar().toDouble(), like);
  }

  // ---- emitting ----
  std::string fresh(const std::string& hint) { return fmt::format("{}_{}", hint, counter_++); }
  std::vector<std::string> emit_n(const std::string& op, std::vector<std::string> inputs,
                                  std::vector<Attribute> attrs, size_t outputs) {
    Node n;
    n.op_type = op;
    n.inputs = std::move(inputs);
    n.attributes = std::move(attrs);
    n.name = fmt::format("{}/{}_{}", scope_, op, counter_++);
    for (size_t i = 0; i < outputs; ++i) n.outputs.push_back(fresh(op));
    graph.nodes.push_back(n);
    return n.outputs;
  }
  std::string emit(const std::string& op, std::vector<std::string> inputs,
                   std::vector<Attribute> attrs = {}) {
    return emit_n(op, std::move(inputs), std::move(attrs), 1)[0];
  }
  /// emit() whose result is the value of node output `out`.
  void emit_to(const jit::Value* out, const std::string& op, std::vector<std::string> inputs,
               std::vector<Attribute> attrs = {}) {
    set(out, emit(op, std::move(inputs), std::move(attrs)));
  }

  /// A constant tensor; float ones become float16 in an fp16 export unless `keep_float32`.
  std::string add_initializer(const at::Tensor& t, const std::string& name,
                              bool keep_float32 = false) {
    DType dt = to_onnx(t.scalar_type());
    at::Tensor value = t;
    if (fp16_ && dt == DType::Float && !keep_float32) {
      value = t.to(at::kHalf);
      dt = DType::Float16;
    }
    graph.initializers.push_back(tensor_data(value, name, dt));
    return name;
  }
  std::string const_i64(const std::vector<int64_t>& v) {
    return add_initializer(at::tensor(v, at::kLong), fresh("ints"));
  }
  std::string scalar(double v, DType dt) {
    const at::Tensor t = at::scalar_tensor(v, at::TensorOptions().dtype(to_torch(dt)));
    graph.initializers.push_back(tensor_data(t, fresh("scalar"), dt));
    return graph.initializers.back().name;
  }
  std::string cast(const std::string& x, DType from, DType to) {
    if (from == to) return x;
    return emit("Cast", {x}, {{"to", static_cast<int64_t>(to)}});
  }

  // ---- sizes at run time ----
  /// 1-D [1] int64 tensor holding symbol `s`'s size: Shape(input)[axis].
  std::string symbol_size(int s) {
    auto it = symbol_cache_.find(s);
    if (it != symbol_cache_.end()) return it->second;
    const Symbol& sym = tg_.symbols.at(static_cast<size_t>(s));
    const std::string shape = emit("Shape", {graph.inputs.at(static_cast<size_t>(sym.input)).name});
    return symbol_cache_[s] =
               emit("Gather", {shape, const_i64({sym.axis})}, {{"axis", int64_t{0}}});
  }
  /// 1-D [1] int64 tensor holding a size.
  std::string size_tensor(const SymSize& s) {
    LATHE_CHECK(s.known, ExportError,
                "{}: a size varies with the dynamic axes in a way that cannot be computed; "
                "export with fixed axes",
                where_);
    if (!s.dynamic()) return const_i64({s.j});
    if (s.plain_symbol() >= 0) return symbol_size(s.plain_symbol());
    std::vector<std::string> terms;
    const auto scaled = [&](std::string x, int64_t k) {
      return k == 1 ? x : emit("Mul", {x, const_i64({k})});
    };
    if (s.k12 != 0) terms.push_back(scaled(emit("Mul", {symbol_size(0), symbol_size(1)}), s.k12));
    for (int i = 0; i < 2; ++i) {
      if (s.k[static_cast<size_t>(i)] != 0) {
        terms.push_back(scaled(symbol_size(i), s.k[static_cast<size_t>(i)]));
      }
    }
    std::string sum = terms[0];
    for (size_t i = 1; i < terms.size(); ++i) sum = emit("Add", {sum, terms[i]});
    return s.j == 0 ? sum : emit("Add", {sum, const_i64({s.j})});
  }
  /// 1-D int64 tensor holding a whole shape; with `minus_one`, a single dynamic size becomes -1
  /// (for Reshape), so that no Shape arithmetic is needed.
  std::string shape_tensor(const SymShape& shape, bool minus_one) {
    int dynamic = 0;
    for (const SymSize& s : shape) dynamic += s.dynamic() ? 1 : 0;
    if (dynamic == 0 || (minus_one && dynamic == 1)) {
      std::vector<int64_t> v;
      for (const SymSize& s : shape) v.push_back(s.dynamic() ? -1 : s.j);
      return const_i64(v);
    }
    std::vector<std::string> pieces;
    std::vector<int64_t> run;
    for (const SymSize& s : shape) {
      if (!s.dynamic()) {
        run.push_back(s.j);
        continue;
      }
      if (!run.empty()) pieces.push_back(const_i64(run));
      run.clear();
      pieces.push_back(size_tensor(s));
    }
    if (!run.empty()) pieces.push_back(const_i64(run));
    return pieces.size() == 1 ? pieces[0] : emit("Concat", pieces, {{"axis", int64_t{0}}});
  }
  /// x reshaped to the shape that traced value `out` has.
  void reshape_to(const jit::Value* out, const std::string& x) {
    emit_to(out, "Reshape", {x, shape_tensor(shape(out), /*minus_one=*/true)});
  }

  // ---- the walk ----
  void run(const std::vector<InputSpec>& specs, const std::vector<std::string>& output_names);
  const std::string& where() const { return where_; }

 private:
  void update_scope(jit::Node* n);
  /// A graph input / output: its traced element type and its sizes (symbols where dynamic).
  ValueInfo value_info(const jit::Value* v, const std::string& name) const;

  const TracedGraph& tg_;
  bool fp16_;
  std::unordered_map<const jit::Value*, std::string> names_;
  std::map<int, std::string> symbol_cache_;
  int64_t counter_ = 0;
  std::string scope_ = "model";
  std::string where_;
};

std::string module_of(const std::string& parameter) {
  const auto dot = parameter.rfind('.');
  return dot == std::string::npos ? std::string("model") : parameter.substr(0, dot);
}

void Translator::update_scope(jit::Node* n) {
  // Node names and messages carry the module a node belongs to: the owner of a parameter it
  // reads, else the module of the node before it.
  for (const jit::Value* v : n->inputs()) {
    auto it = tg_.parameter_names.find(v);
    if (it != tg_.parameter_names.end()) {
      scope_ = module_of(it->second);
      break;
    }
    if (v->node()->kind() == c10::prim::ListConstruct) {
      for (const jit::Value* e : v->node()->inputs()) {
        auto jt = tg_.parameter_names.find(e);
        if (jt != tg_.parameter_names.end()) scope_ = module_of(jt->second);
      }
    }
  }
}

ValueInfo Translator::value_info(const jit::Value* v, const std::string& name) const {
  ValueInfo vi;
  vi.name = name;
  vi.dtype = to_onnx(*v->type()->expect<c10::TensorType>()->scalarType());
  for (const SymSize& s : shape(v)) {  // fixed sizes, symbols, or "" for a computed size
    if (!s.dynamic()) {
      vi.shape.emplace_back(s.j);
    } else if (s.plain_symbol() >= 0) {
      vi.shape.emplace_back(tg_.symbols[static_cast<size_t>(s.plain_symbol())].name);
    } else if (!s.spatial.empty()) {
      vi.shape.emplace_back(s.spatial);
    } else {
      vi.shape.emplace_back(std::string());
    }
  }
  return vi;
}

void Translator::run(const std::vector<InputSpec>& specs,
                     const std::vector<std::string>& output_names) {
  jit::Graph& g = *tg_.graph;
  for (size_t i = 0; i < g.inputs().size(); ++i) {
    const jit::Value* v = g.inputs()[i];
    const ValueInfo vi = value_info(v, specs.at(i).name);
    graph.inputs.push_back(vi);
    set(v, cast(vi.name, vi.dtype, compute(vi.dtype)));
  }

  const auto& table = handlers();
  for (jit::Node* n : g.nodes()) {
    const std::string kind = n->kind().toQualString();
    if (n->kind() == c10::prim::Constant || n->kind() == c10::prim::ListConstruct) continue;
    update_scope(n);
    where_ = fmt::format("operation '{}' in module '{}'", kind, scope_);
    std::string op = kind;
    // In-place variants (add_, relu_) compute the same value as their out-of-place forms.
    if (op.size() > 1 && op.back() == '_' && op[op.size() - 2] != '_') op.pop_back();
    auto it = table.find(op);
    if (it == table.end()) {
      throw ExportError(fmt::format(
          "cannot export {}: lathe has no ONNX opset 17 translation for '{}'. Write that part of "
          "the forward with supported operations (lathe export --list-ops prints them)",
          where_, kind));
    }
    try {
      it->second(*this, n);
    } catch (const lathe::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw ExportError(fmt::format("cannot export {}: {}", where_, e.what()));
    }
  }

  for (size_t i = 0; i < g.outputs().size(); ++i) {
    const jit::Value* v = g.outputs()[i];
    LATHE_CHECK(v->type()->cast<c10::TensorType>(), ExportError,
                "the forward's output {} is not a tensor", i);
    const ValueInfo vi =
        value_info(v, i < output_names.size() ? output_names[i] : fmt::format("output{}", i));
    const DType traced = vi.dtype;
    const std::string value = cast(in(v), dtype(v), traced);
    Node id;
    id.op_type = "Identity";
    id.inputs = {value};
    id.outputs = {vi.name};
    id.name = fmt::format("output/{}", vi.name);
    graph.nodes.push_back(id);
    graph.outputs.push_back(vi);
  }
  // Only initializers a node reads are written: a constant whose users were folded away (a
  // scalar absorbed into an attribute, ...) leaves nothing behind for onnxruntime to warn about.
  std::set<std::string> used;
  for (const Node& n : graph.nodes) used.insert(n.inputs.begin(), n.inputs.end());
  std::erase_if(graph.initializers, [&](const TensorData& t) { return used.count(t.name) == 0; });
}

// ============================== the translations ==============================

using T = Translator;
using V = const jit::Value*;

void unary(T& t, jit::Node* n, const std::string& op) { t.emit_to(n->output(), op, {t.in(n->input(0))}); }

/// x ⊙ y for add / sub / mul / div and friends; a Scalar operand becomes a constant of the
/// result's type, a tensor of another type is cast (PyTorch's type promotion).
void binary(T& t, jit::Node* n, const std::string& op) {
  const DType out = t.dtype(n->output());
  std::string a = t.operand(n->input(0), out);
  std::string b = t.operand(n->input(1), out);
  // add / sub carry alpha: x + alpha·y.
  if ((op == "Add" || op == "Sub") && n->inputs().size() > 2 && !t.is_none(n->input(2))) {
    const double alpha = t.double_arg(n->input(2));
    if (alpha != 1.0) b = t.emit("Mul", {b, t.scalar(alpha, out)});
  }
  t.emit_to(n->output(), op, {a, b});
}

void compare(T& t, jit::Node* n, const std::string& op, bool negate) {
  // Compare in the tensor operand's type.
  const DType like = t.dtype(n->input(0));
  std::string r = t.emit(op, {t.operand(n->input(0), like), t.operand(n->input(1), like)});
  if (negate) r = t.emit("Not", {r});
  t.set(n->output(), r);
}

void logic(T& t, jit::Node* n, const std::string& op) {
  t.emit_to(n->output(), op,
            {t.operand(n->input(0), DType::Bool), t.operand(n->input(1), DType::Bool)});
}

void identity(T& t, jit::Node* n) { t.set(n->output(), t.in(n->input(0))); }

void linear(T& t, jit::Node* n) {
  const std::string x = t.in(n->input(0)), w = t.in(n->input(1));
  const bool bias = !t.is_none(n->input(2));
  if (t.rank(n->input(0)) == 2) {  // (B, in) · (out, in)ᵀ + b: one Gemm
    std::vector<std::string> ins{x, w};
    if (bias) ins.push_back(t.in(n->input(2)));
    t.emit_to(n->output(), "Gemm", ins, {{"transB", int64_t{1}}});
    return;
  }
  const std::string wt = t.emit("Transpose", {w}, {{"perm", std::vector<int64_t>{1, 0}}});
  std::string y = t.emit("MatMul", {x, wt});
  if (bias) y = t.emit("Add", {y, t.in(n->input(2))});
  t.set(n->output(), y);
}

void addmm(T& t, jit::Node* n) {  // beta·self + alpha·(mat1 @ mat2)
  const double beta = n->inputs().size() > 3 ? t.double_arg(n->input(3)) : 1.0;
  const double alpha = n->inputs().size() > 4 ? t.double_arg(n->input(4)) : 1.0;
  t.emit_to(n->output(), "Gemm", {t.in(n->input(1)), t.in(n->input(2)), t.in(n->input(0))},
            {{"alpha", static_cast<float>(alpha)}, {"beta", static_cast<float>(beta)}});
}

/// conv1d / conv2d / convolution / _convolution: (input, weight, bias, stride, padding,
/// dilation, [transposed, output_padding,] groups).
void convolution(T& t, jit::Node* n) {
  const std::string kind = n->kind().toQualString();
  const bool full = kind == "aten::_convolution" || kind == "aten::convolution";
  LATHE_CHECK(n->input(4)->type()->kind() != c10::TypeKind::StringType, ExportError,
              "cannot export {}: string padding ('same' / 'valid'); give the padding as numbers",
              t.where());
  if (full) {
    LATHE_CHECK(!t.bool_arg(n->input(6)), ExportError,
                "cannot export {}: transposed convolution is not supported", t.where());
  }
  const int64_t spatial = t.rank(n->input(1)) - 2;
  const auto expand = [&](std::vector<int64_t> v) {
    if (v.size() == 1 && spatial > 1) v.assign(static_cast<size_t>(spatial), v[0]);
    return v;
  };
  const std::vector<int64_t> stride = expand(t.ints_arg(n->input(3)));
  const std::vector<int64_t> padding = expand(t.ints_arg(n->input(4)));
  const std::vector<int64_t> dilation = expand(t.ints_arg(n->input(5)));
  const int64_t groups = t.int_arg(n->input(full ? 8 : 6));
  std::vector<int64_t> pads = padding;  // [begin..., end...]
  pads.insert(pads.end(), padding.begin(), padding.end());
  std::vector<int64_t> kernel;
  for (int64_t d = 2; d < 2 + spatial; ++d) kernel.push_back(t.size(n->input(1), d));
  std::vector<std::string> ins{t.in(n->input(0)), t.in(n->input(1))};
  if (!t.is_none(n->input(2))) ins.push_back(t.in(n->input(2)));
  t.emit_to(n->output(), "Conv", ins,
            {{"kernel_shape", kernel},
             {"strides", stride},
             {"pads", pads},
             {"dilations", dilation},
             {"group", groups}});
}

/// batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn).
void batch_norm(T& t, jit::Node* n) {
  LATHE_CHECK(!t.bool_arg(n->input(5)) || t.is_none(n->input(3)) == false, ExportError,
              "cannot export {}: batch statistics (training mode)", t.where());
  const int64_t channels = t.size(n->input(0), 1);
  const auto param = [&](V v, double fill) {
    return t.is_none(v) ? t.add_initializer(at::full({channels}, fill), t.fresh("bn"))
                        : t.in(v);
  };
  LATHE_CHECK(!t.is_none(n->input(3)) && !t.is_none(n->input(4)), ExportError,
              "cannot export {}: BatchNorm without running statistics", t.where());
  t.emit_to(n->output(), "BatchNormalization",
            {t.in(n->input(0)), param(n->input(1), 1.0), param(n->input(2), 0.0),
             t.in(n->input(3)), t.in(n->input(4))},
            {{"epsilon", static_cast<float>(t.double_arg(n->input(7)))}});
}

/// layer_norm(input, normalized_shape, weight, bias, eps, cudnn_enable).
void layer_norm(T& t, jit::Node* n) {
  const std::vector<int64_t> normalized = t.ints_arg(n->input(1));
  int64_t count = 1;
  for (int64_t s : normalized) count *= s;
  const auto param = [&](V v, double fill) {
    return t.is_none(v) ? t.add_initializer(at::full(normalized, fill), t.fresh("ln"))
                        : t.in(v);
  };
  t.emit_to(n->output(), "LayerNormalization",
            {t.in(n->input(0)), param(n->input(2), 1.0), param(n->input(3), 0.0)},
            {{"axis", -static_cast<int64_t>(normalized.size())},
             {"epsilon", static_cast<float>(t.double_arg(n->input(4)))}});
}

void gelu(T& t, jit::Node* n) {
  const std::string x = t.in(n->input(0));
  const DType dt = t.dtype(n->input(0));
  const std::string approximate =
      n->inputs().size() > 1 ? t.constant(n->input(1)).toStringRef() : std::string("none");
  std::string inner;
  if (approximate == "tanh") {  // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
    const std::string x3 = t.emit("Mul", {t.emit("Mul", {x, x}), x});
    const std::string s = t.emit("Add", {x, t.emit("Mul", {x3, t.scalar(0.044715, dt)})});
    inner = t.emit("Tanh", {t.emit("Mul", {s, t.scalar(std::sqrt(2.0 / M_PI), dt)})});
  } else {  // 0.5·x·(1 + erf(x/√2))
    inner = t.emit("Erf", {t.emit("Div", {x, t.scalar(std::sqrt(2.0), dt)})});
  }
  const std::string one_plus = t.emit("Add", {inner, t.scalar(1.0, dt)});
  t.emit_to(n->output(), "Mul", {t.emit("Mul", {x, t.scalar(0.5, dt)}), one_plus});
}

void silu(T& t, jit::Node* n) {
  const std::string x = t.in(n->input(0));
  t.emit_to(n->output(), "Mul", {x, t.emit("Sigmoid", {x})});
}

void clip(T& t, jit::Node* n, std::optional<double> lo, std::optional<double> hi) {
  const DType dt = t.dtype(n->input(0));
  std::vector<std::string> ins{t.in(n->input(0))};
  ins.push_back(lo ? t.scalar(*lo, dt) : std::string());
  if (hi) ins.push_back(t.scalar(*hi, dt));
  t.emit_to(n->output(), "Clip", ins);
}

std::optional<double> optional_double(T& t, V v) {
  if (t.is_none(v)) return std::nullopt;
  return t.double_arg(v);
}

void softmax(T& t, jit::Node* n, const std::string& op) {
  std::string x = t.in(n->input(0));
  x = t.cast(x, t.dtype(n->input(0)), t.dtype(n->output()));
  t.emit_to(n->output(), op, {x}, {{"axis", t.int_arg(n->input(1))}});
}

/// max_pool2d(self, kernel, stride, padding, dilation, ceil_mode) and
/// avg_pool2d(self, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override).
void pool(T& t, jit::Node* n, bool max) {
  const int64_t spatial = t.rank(n->input(0)) - 2;
  const auto expand = [&](std::vector<int64_t> v) {
    if (v.size() == 1 && spatial > 1) v.assign(static_cast<size_t>(spatial), v[0]);
    return v;
  };
  const std::vector<int64_t> kernel = expand(t.ints_arg(n->input(1)));
  std::vector<int64_t> stride = expand(t.ints_arg(n->input(2)));
  if (stride.empty()) stride = kernel;
  const std::vector<int64_t> padding = expand(t.ints_arg(n->input(3)));
  std::vector<int64_t> pads = padding;
  pads.insert(pads.end(), padding.begin(), padding.end());
  std::vector<Attribute> attrs{{"kernel_shape", kernel}, {"strides", stride}, {"pads", pads}};
  if (max) {
    attrs.push_back({"dilations", expand(t.ints_arg(n->input(4)))});
    attrs.push_back({"ceil_mode", static_cast<int64_t>(t.bool_arg(n->input(5)))});
  } else {
    attrs.push_back({"ceil_mode", static_cast<int64_t>(t.bool_arg(n->input(4)))});
    attrs.push_back({"count_include_pad", static_cast<int64_t>(t.bool_arg(n->input(5)))});
    LATHE_CHECK(n->inputs().size() < 7 || t.is_none(n->input(6)), ExportError,
                "cannot export {}: divisor_override", t.where());
  }
  t.emit_to(n->output(), max ? "MaxPool" : "AveragePool", {t.in(n->input(0))}, attrs);
}

void adaptive_avg_pool(T& t, jit::Node* n) {
  const std::vector<int64_t> out = t.ints_arg(n->input(1));
  bool global = true;
  for (int64_t o : out) global = global && o == 1;
  if (global) {
    t.emit_to(n->output(), "GlobalAveragePool", {t.in(n->input(0))});
    return;
  }
  // An exact division of a fixed input size is an ordinary average pool.
  std::vector<int64_t> kernel;
  const int64_t rank = t.rank(n->input(0));
  for (size_t i = 0; i < out.size(); ++i) {
    const int64_t in = t.size(n->input(0), rank - static_cast<int64_t>(out.size()) + static_cast<int64_t>(i));
    LATHE_CHECK(in % out[i] == 0, ExportError,
                "cannot export {}: adaptive pooling from {} to {} is not a uniform window",
                t.where(), in, out[i]);
    kernel.push_back(in / out[i]);
  }
  t.emit_to(n->output(), "AveragePool", {t.in(n->input(0))},
            {{"kernel_shape", kernel}, {"strides", kernel}});
}

void reshape_like(T& t, jit::Node* n) { t.reshape_to(n->output(), t.in(n->input(0))); }

void unsqueeze(T& t, jit::Node* n) {
  const int64_t axis = norm_axis(t.int_arg(n->input(1)), t.rank(n->output()));
  t.emit_to(n->output(), "Unsqueeze", {t.in(n->input(0)), t.const_i64({axis})});
}

void transpose(T& t, jit::Node* n) {
  const int64_t rank = t.rank(n->input(0));
  std::vector<int64_t> perm(static_cast<size_t>(rank));
  for (int64_t i = 0; i < rank; ++i) perm[static_cast<size_t>(i)] = i;
  const std::string kind = n->kind().toQualString();
  if (kind == "aten::t") {
    if (rank < 2) return identity(t, n);
    std::swap(perm[0], perm[1]);
  } else if (kind == "aten::permute") {
    perm = t.ints_arg(n->input(1));
    for (auto& p : perm) p = norm_axis(p, rank);
  } else {
    const auto a = static_cast<size_t>(norm_axis(t.int_arg(n->input(1)), rank));
    const auto b = static_cast<size_t>(norm_axis(t.int_arg(n->input(2)), rank));
    std::swap(perm[a], perm[b]);
  }
  t.emit_to(n->output(), "Transpose", {t.in(n->input(0))}, {{"perm", perm}});
}

void expand(T& t, jit::Node* n) {
  t.emit_to(n->output(), "Expand",
            {t.in(n->input(0)), t.shape_tensor(t.shape(n->output()), /*minus_one=*/false)});
}

void embedding(T& t, jit::Node* n) {  // embedding(weight, indices, padding_idx, ...)
  t.emit_to(n->output(), "Gather", {t.in(n->input(0)), t.in(n->input(1))}, {{"axis", int64_t{0}}});
}

void select(T& t, jit::Node* n) {  // select(self, dim, index): the dim disappears
  const int64_t dim = norm_axis(t.int_arg(n->input(1)), t.rank(n->input(0)));
  const std::string index =
      t.add_initializer(at::scalar_tensor(t.int_arg(n->input(2)), at::kLong), t.fresh("index"));
  t.emit_to(n->output(), "Gather", {t.in(n->input(0)), index}, {{"axis", dim}});
}

void index_select(T& t, jit::Node* n) {
  const int64_t dim = norm_axis(t.int_arg(n->input(1)), t.rank(n->input(0)));
  t.emit_to(n->output(), "Gather", {t.in(n->input(0)), t.in(n->input(2))}, {{"axis", dim}});
}

/// slice(self, dim, start, end, step). A traced end that followed a dynamic axis is computed.
void slice(T& t, jit::Node* n) {
  const int64_t dim = norm_axis(t.int_arg(n->input(1)), t.rank(n->input(0)));
  const int64_t step = t.int_arg(n->input(4));
  std::string start, end;
  if (t.is_none(n->input(2))) {
    start = t.const_i64({0});
  } else {
    const SymShape s = t.sym_ints(n->input(2));
    start = t.size_tensor(s.at(0));
  }
  if (t.is_none(n->input(3))) {
    end = t.const_i64({std::numeric_limits<int64_t>::max()});
  } else {
    const SymShape e = t.sym_ints(n->input(3));
    end = t.size_tensor(e.at(0));
  }
  t.emit_to(n->output(), "Slice",
            {t.in(n->input(0)), start, end, t.const_i64({dim}), t.const_i64({step})});
}

std::vector<V> list_items(V list) {
  LATHE_CHECK(list->node()->kind() == c10::prim::ListConstruct, ExportError,
              "a tensor list computed by the forward cannot be exported");
  return {list->node()->inputs().begin(), list->node()->inputs().end()};
}

void cat(T& t, jit::Node* n, bool stack) {
  const std::vector<V> items = list_items(n->input(0));
  const int64_t rank = t.rank(n->output());
  const int64_t dim = norm_axis(t.int_arg(n->input(1)), rank);
  const DType dt = t.dtype(n->output());
  std::vector<std::string> ins;
  for (V v : items) {
    std::string x = t.cast(t.in(v), t.dtype(v), dt);
    if (stack) x = t.emit("Unsqueeze", {x, t.const_i64({dim})});
    ins.push_back(x);
  }
  t.emit_to(n->output(), "Concat", ins, {{"axis", dim}});
}

/// split / split_with_sizes / chunk / unbind → one Split; the list is taken apart by the
/// prim::ListUnpack that follows (its outputs' sizes give the split sizes).
void split(T& t, jit::Node* n) {
  const std::string kind = n->kind().toQualString();
  const jit::Value* list = n->output();
  LATHE_CHECK(list->uses().size() == 1 && list->uses()[0].user->kind() == c10::prim::ListUnpack,
              ExportError, "cannot export {}: its pieces must be unpacked directly", t.where());
  const jit::Node* unpack = list->uses()[0].user;
  const bool unbind = kind == "aten::unbind";
  const int64_t rank = t.rank(n->input(0));
  const int64_t dim = norm_axis(t.int_arg(n->input(unbind ? 1 : 2)), rank);  // (self, n|sizes, dim)
  std::vector<int64_t> sizes;
  for (const jit::Value* piece : unpack->outputs()) {
    sizes.push_back(unbind ? 1 : t.size(piece, dim));
  }
  const std::vector<std::string> parts =
      t.emit_n("Split", {t.in(n->input(0)), t.const_i64(sizes)}, {{"axis", dim}}, sizes.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string p = parts[i];
    if (unbind) p = t.emit("Squeeze", {p, t.const_i64({dim})});
    t.set(unpack->outputs()[i], p);
  }
}

/// ones / zeros / full / *_like / new_*: ConstantOfShape with the output's (run-time) shape.
void filled(T& t, jit::Node* n, std::optional<double> fill) {
  const std::string kind = n->kind().toQualString();
  double value = 0.0;
  if (fill) {
    value = *fill;
  } else {  // full(size, fill_value, ...) / full_like(self, fill_value, ...)
    value = t.double_arg(n->input(1));
  }
  const TensorData v = fill_value(value, t.dtype(n->output()));
  t.emit_to(n->output(), "ConstantOfShape", {t.shape_tensor(t.shape(n->output()), false)},
            {{"value", v}});
}

/// arange(end, ...), arange(start, end, ...), arange(start, end, step, ...).
void arange(T& t, jit::Node* n) {
  // The overloads differ by argument count: 5 (end), 6 (start, end), 7 (start, end, step).
  const size_t count = n->inputs().size();
  const DType dt = t.dtype(n->output());
  const auto number = [&](V v) -> std::string {
    if (v->type()->cast<c10::TensorType>()) return t.in(v);
    const SymShape s = t.sym_ints(v).empty() ? SymShape{} : t.sym_ints(v);
    if (!s.empty() && s[0].dynamic()) {  // a size read from an input: computed at run time
      return t.cast(t.emit("Squeeze", {t.size_tensor(s[0]), t.const_i64({0})}), DType::Int64, dt);
    }
    return t.scalar(t.double_arg(v), dt);
  };
  const auto is_number = [&](V v) {
    const auto k = v->type()->kind();
    return k == c10::TypeKind::IntType || k == c10::TypeKind::FloatType ||
           k == c10::TypeKind::NumberType;
  };
  std::string start = t.scalar(0, dt), end, step = t.scalar(1, dt);
  if (count >= 7 && is_number(n->input(2))) {
    start = number(n->input(0));
    end = number(n->input(1));
    step = number(n->input(2));
  } else if (count >= 6 && is_number(n->input(1))) {
    start = number(n->input(0));
    end = number(n->input(1));
  } else {
    end = number(n->input(0));
  }
  t.emit_to(n->output(), "Range", {start, end, step});
}

/// eye(n, m, ...): EyeLike over a zero matrix of the output's shape.
void eye(T& t, jit::Node* n) {
  const DType dt = t.dtype(n->output());
  const TensorData zero = fill_value(0.0, DType::Float);
  const std::string zeros = t.emit(
      "ConstantOfShape", {t.shape_tensor(t.shape(n->output()), false)}, {{"value", zero}});
  const std::string eye = t.emit("EyeLike", {zeros});
  t.set(n->output(), t.cast(eye, DType::Float, dt));
}

void trilu(T& t, jit::Node* n, bool upper) {
  const DType dt = t.dtype(n->input(0));
  const int64_t k = n->inputs().size() > 1 ? t.int_arg(n->input(1)) : 0;
  // Some runtimes lack a bool Trilu kernel: go through float.
  const DType work = dt == DType::Bool ? DType::Float : dt;
  const std::string x = t.cast(t.in(n->input(0)), dt, work);
  const std::string y = t.emit("Trilu", {x, t.const_i64({k})}, {{"upper", int64_t{upper}}});
  t.set(n->output(), t.cast(y, work, dt));
}

void to_type(T& t, jit::Node* n) {
  t.set(n->output(), t.cast(t.in(n->input(0)), t.dtype(n->input(0)), t.dtype(n->output())));
}

void masked_fill(T& t, jit::Node* n) {  // masked_fill(self, mask, value)
  const DType dt = t.dtype(n->output());
  t.emit_to(n->output(), "Where",
            {t.in(n->input(1)), t.operand(n->input(2), dt), t.in(n->input(0))});
}

void where(T& t, jit::Node* n) {  // where(condition, self, other)
  const DType dt = t.dtype(n->output());
  t.emit_to(n->output(), "Where",
            {t.in(n->input(0)), t.operand(n->input(1), dt), t.operand(n->input(2), dt)});
}

/// any / all over dims: a max / min of the values as int32, back to bool.
void any_all(T& t, jit::Node* n, bool any) {
  const std::string x = t.cast(t.in(n->input(0)), t.dtype(n->input(0)), DType::Int32);
  std::vector<Attribute> attrs{{"keepdims", int64_t{0}}};
  if (n->inputs().size() > 1) {
    std::vector<int64_t> dims = t.ints_arg(n->input(1));
    for (auto& d : dims) d = norm_axis(d, t.rank(n->input(0)));
    attrs = {{"axes", dims}, {"keepdims", static_cast<int64_t>(t.bool_arg(n->input(2)))}};
  }
  const std::string r = t.emit(any ? "ReduceMax" : "ReduceMin", {x}, attrs);
  t.set(n->output(), t.cast(r, DType::Int32, DType::Bool));
}

/// mean / sum / amax over dims (keepdim); without dims, over everything.
void reduce(T& t, jit::Node* n, const std::string& op) {
  const int64_t rank = t.rank(n->input(0));
  std::vector<int64_t> dims;
  bool keep = false;
  if (n->inputs().size() >= 3 && !t.is_none(n->input(1)) &&
      n->input(1)->type()->kind() != c10::TypeKind::NoneType &&
      n->input(1)->type()->kind() != c10::TypeKind::IntType) {
    dims = t.ints_arg(n->input(1));
    keep = t.bool_arg(n->input(2));
  } else if (n->inputs().size() >= 3 && n->input(1)->type()->kind() == c10::TypeKind::IntType) {
    dims = {t.int_arg(n->input(1))};
    keep = t.bool_arg(n->input(2));
  }
  if (dims.empty()) {
    for (int64_t d = 0; d < rank; ++d) dims.push_back(d);
  }
  for (auto& d : dims) d = norm_axis(d, rank);
  const std::string x = t.cast(t.in(n->input(0)), t.dtype(n->input(0)), t.dtype(n->output()));
  if (op == "ReduceSum") {  // axes is an input from opset 13
    t.emit_to(n->output(), op, {x, t.const_i64(dims)}, {{"keepdims", int64_t{keep}}});
  } else {
    t.emit_to(n->output(), op, {x}, {{"axes", dims}, {"keepdims", int64_t{keep}}});
  }
}

/// scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa):
/// softmax(q·kᵀ·scale + mask)·v, a boolean mask meaning "may attend"; with enable_gqa the key
/// and value heads are repeated over the query heads.
void sdpa(T& t, jit::Node* n) {
  const DType dt = t.dtype(n->input(0));
  const std::string q = t.in(n->input(0));
  const int64_t rank = t.rank(n->input(1));
  const int64_t head = t.size(n->input(0), -1);
  double scale = 1.0 / std::sqrt(static_cast<double>(head));
  if (n->inputs().size() > 6 && !t.is_none(n->input(6))) scale = t.double_arg(n->input(6));
  std::string k = t.in(n->input(1)), v = t.in(n->input(2));
  if (n->inputs().size() > 7 && t.bool_arg(n->input(7))) {
    // grouped-query attention: each key/value head serves H / KV query heads, in order
    LATHE_CHECK(rank == 4, ExportError, "cannot export {}: enable_gqa on rank {} inputs",
                t.where(), rank);
    const int64_t H = t.size(n->input(0), 1), KV = t.size(n->input(1), 1);
    LATHE_CHECK(H % KV == 0, ExportError, "cannot export {}: {} query heads over {} key heads",
                t.where(), H, KV);
    const auto repeat = [&](const std::string& x) {  // (B, KV, S, D) → (B, H, S, D)
      const std::string wide = t.emit("Unsqueeze", {x, t.const_i64({2})});  // (B, KV, 1, S, D)
      const std::string grown = t.emit("Expand", {wide, t.const_i64({1, 1, H / KV, 1, 1})});
      return t.emit("Reshape", {grown, t.const_i64({0, H, -1, head})});
    };
    if (H != KV) {
      k = repeat(k);
      v = repeat(v);
    }
  }
  std::vector<int64_t> perm;
  for (int64_t i = 0; i < rank; ++i) perm.push_back(i);
  std::swap(perm[static_cast<size_t>(rank - 1)], perm[static_cast<size_t>(rank - 2)]);
  const std::string kt = t.emit("Transpose", {k}, {{"perm", perm}});
  std::string scores = t.emit("Mul", {t.emit("MatMul", {q, kt}), t.scalar(scale, dt)});
  const std::string neg_inf = t.scalar(-std::numeric_limits<double>::infinity(), dt);

  const auto mask_with = [&](const std::string& allowed) {  // allowed: bool, broadcastable
    scores = t.emit("Where", {allowed, scores, neg_inf});
  };
  if (!t.is_none(n->input(3))) {
    const jit::Value* m = n->input(3);
    if (t.dtype(m) == DType::Bool) {
      mask_with(t.in(m));
    } else {
      scores = t.emit("Add", {scores, t.cast(t.in(m), t.dtype(m), dt)});
    }
  }
  if (t.bool_arg(n->input(5))) {  // causal: position i attends to j <= i
    const SymShape& qs = t.shape(n->input(0));
    const SymShape& ks = t.shape(n->input(1));
    const SymShape ts{qs[qs.size() - 2], ks[ks.size() - 2]};
    const TensorData one = fill_value(1.0, DType::Float);
    const std::string ones = t.emit("ConstantOfShape", {t.shape_tensor(ts, false)}, {{"value", one}});
    const std::string tril = t.emit("Trilu", {ones, t.const_i64({0})}, {{"upper", int64_t{0}}});
    mask_with(t.cast(tril, DType::Float, DType::Bool));
  }
  const std::string probs = t.emit("Softmax", {scores}, {{"axis", int64_t{-1}}});
  t.emit_to(n->output(), "MatMul", {probs, v});
}

/// sort(self, dim, descending) / sort.stable(self, stable, dim, descending): TopK over the whole
/// dimension gives the values and the indices.
void sort(T& t, jit::Node* n) {
  const size_t a = n->inputs().size() == 4 ? 1 : 0;
  const int64_t dim = norm_axis(t.int_arg(n->input(1 + a)), t.rank(n->input(0)));
  const bool descending = t.bool_arg(n->input(2 + a));
  const std::string k = t.size_tensor(t.shape(n->input(0)).at(static_cast<size_t>(dim)));
  const std::vector<std::string> outs =
      t.emit_n("TopK", {t.in(n->input(0)), k},
               {{"axis", dim}, {"largest", int64_t{descending}}, {"sorted", int64_t{1}}}, 2);
  t.set(n->outputs()[0], outs[0]);
  t.set(n->outputs()[1], outs[1]);
}

void scatter(T& t, jit::Node* n) {  // scatter(self, dim, index, src)
  const DType dt = t.dtype(n->output());
  const int64_t dim = norm_axis(t.int_arg(n->input(1)), t.rank(n->input(0)));
  std::string src = t.operand(n->input(3), dt);
  if (!n->input(3)->type()->cast<c10::TensorType>()) {  // a number: as many as the indices
    src = t.emit("Expand", {src, t.emit("Shape", {t.in(n->input(2))})});
  }
  t.emit_to(n->output(), "ScatterElements", {t.in(n->input(0)), t.in(n->input(2)), src},
            {{"axis", dim}});
}

/// The per-gate blocks of an RNN weight, reordered from PyTorch's order to ONNX's.
at::Tensor reorder_gates(const at::Tensor& w, const std::vector<int64_t>& order) {
  const std::vector<at::Tensor> gates = w.chunk(static_cast<int64_t>(order.size()), 0);
  std::vector<at::Tensor> out;
  for (int64_t i : order) out.push_back(gates[static_cast<size_t>(i)]);
  return at::cat(out, 0);
}

/// lstm(input, hx[2], params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
/// and gru(input, hx, params, ...): one ONNX LSTM / GRU per layer.
void rnn(T& t, jit::Node* n, bool lstm) {
  const std::vector<int64_t> order = lstm ? std::vector<int64_t>{0, 3, 1, 2}   // i,f,g,o → i,o,f,c
                                          : std::vector<int64_t>{1, 0, 2};     // r,z,n → z,r,h
  // lstm.data / gru.data take a PackedSequence's (data, batch_sizes): the padded input and the
  // lengths come from the _pack_padded_sequence before them, and become ONNX's sequence_lens.
  const jit::Node* pack = n->input(0)->node();
  const bool packed = pack->kind() == c10::Symbol::fromQualString("aten::_pack_padded_sequence");
  const size_t a = packed ? 1 : 0;  // the .data overloads have batch_sizes as argument 1
  const std::vector<V> params = list_items(n->input(2 + a));
  const bool has_biases = t.bool_arg(n->input(3 + a));
  const int64_t layers = t.int_arg(n->input(4 + a));
  const bool bidirectional = t.bool_arg(n->input(7 + a));
  const bool batch_first = packed ? t.bool_arg(pack->input(2)) : t.bool_arg(n->input(8));
  const V input = packed ? pack->input(0) : n->input(0);
  const std::string sequence_lens =
      packed ? t.cast(t.in(pack->input(1)), t.dtype(pack->input(1)), DType::Int32) : std::string();
  const int64_t dirs = bidirectional ? 2 : 1;
  const int64_t per = has_biases ? 4 : 2;
  LATHE_CHECK(static_cast<int64_t>(params.size()) == layers * dirs * per, ExportError,
              "cannot export {}: expected {} weight tensors, got {} (projections are not "
              "supported)",
              t.where(), layers * dirs * per, params.size());
  const auto tensor_of = [&](V v) { return t.constant(v).toTensor(); };
  const int64_t hidden = tensor_of(params[1]).size(1);

  std::vector<V> hx;  // LSTM: (h0, c0); GRU: h0 — (layers·dirs, B, H)
  if (lstm) {
    hx = list_items(n->input(1 + a));
  } else {
    hx = {n->input(1 + a)};
  }
  // The recurrence runs in float32 even in an fp16 export (onnxruntime's CPU provider crashes
  // on a float16 LSTM); `work` is the graph's float type around it.
  const DType work = t.dtype(input);
  const auto to_f32 = [&](const std::string& v) { return t.cast(v, work, DType::Float); };
  const auto from_f32 = [&](const std::string& v) { return t.cast(v, DType::Float, work); };
  // X as (seq, batch, features).
  std::string x = to_f32(t.in(input));
  if (batch_first) x = t.emit("Transpose", {x}, {{"perm", std::vector<int64_t>{1, 0, 2}}});
  std::vector<std::string> last_h, last_c;
  for (int64_t l = 0; l < layers; ++l) {
    std::vector<at::Tensor> w, r, b;
    for (int64_t d = 0; d < dirs; ++d) {
      const size_t base = static_cast<size_t>((l * dirs + d) * per);
      w.push_back(reorder_gates(tensor_of(params[base]), order));
      r.push_back(reorder_gates(tensor_of(params[base + 1]), order));
      if (has_biases) {
        b.push_back(at::cat({reorder_gates(tensor_of(params[base + 2]), order),
                             reorder_gates(tensor_of(params[base + 3]), order)}));
      }
    }
    const std::string prefix = fmt::format("{}.l{}", lstm ? "lstm" : "gru", l);
    std::vector<std::string> ins{x, t.add_initializer(at::stack(w), t.fresh(prefix + ".W"), true),
                                 t.add_initializer(at::stack(r), t.fresh(prefix + ".R"), true)};
    ins.push_back(has_biases ? t.add_initializer(at::stack(b), t.fresh(prefix + ".B"), true)
                             : std::string());
    ins.push_back(sequence_lens);  // "" = every sequence full length
    const auto initial = [&](V state) {
      return to_f32(t.emit("Slice", {t.in(state), t.const_i64({l * dirs}),
                                     t.const_i64({(l + 1) * dirs}), t.const_i64({0})}));
    };
    ins.push_back(initial(hx[0]));
    if (lstm) ins.push_back(initial(hx[1]));
    std::vector<Attribute> attrs{{"hidden_size", hidden},
                                 {"direction", std::string(bidirectional ? "bidirectional" : "forward")}};
    if (!lstm) attrs.push_back({"linear_before_reset", int64_t{1}});
    const std::vector<std::string> outs =
        t.emit_n(lstm ? "LSTM" : "GRU", ins, attrs, lstm ? 3 : 2);
    // Y (seq, dirs, batch, H) → (seq, batch, dirs·H), the next layer's input.
    const std::string y = t.emit("Transpose", {outs[0]}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}});
    x = t.emit("Reshape", {y, t.const_i64({0, 0, -1})});
    last_h.push_back(outs[1]);
    if (lstm) last_c.push_back(outs[2]);
  }
  if (batch_first) x = t.emit("Transpose", {x}, {{"perm", std::vector<int64_t>{1, 0, 2}}});
  // A packed output stays unnamed: using it (pad_packed_sequence) is reported as not computed.
  if (!packed) t.set(n->outputs()[0], from_f32(x));
  const auto concat = [&](const std::vector<std::string>& parts) {
    return from_f32(parts.size() == 1 ? parts[0]
                                      : t.emit("Concat", parts, {{"axis", int64_t{0}}}));
  };
  t.set(n->outputs()[1], concat(last_h));
  if (lstm) t.set(n->outputs()[2], concat(last_c));
}

const std::map<std::string, Handler>& handlers() {
  static const std::map<std::string, Handler> table = [] {
    std::map<std::string, Handler> h;
    const auto un = [](std::string op) { return [op](T& t, jit::Node* n) { unary(t, n, op); }; };
    const auto bin = [](std::string op) { return [op](T& t, jit::Node* n) { binary(t, n, op); }; };
    for (const char* k : {"aten::contiguous", "aten::clone", "aten::detach", "aten::dropout",
                          "aten::feature_dropout", "aten::alpha_dropout", "aten::alias",
                          "aten::lift_fresh"}) {
      h[k] = identity;
    }
    h["aten::linear"] = linear;
    h["aten::addmm"] = addmm;
    for (const char* k : {"aten::matmul", "aten::mm", "aten::bmm"}) {
      h[k] = [](T& t, jit::Node* n) {
        t.emit_to(n->output(), "MatMul", {t.in(n->input(0)), t.in(n->input(1))});
      };
    }
    for (const char* k : {"aten::_convolution", "aten::convolution", "aten::conv1d",
                          "aten::conv2d", "aten::conv3d"}) {
      h[k] = convolution;
    }
    h["aten::batch_norm"] = batch_norm;
    h["aten::layer_norm"] = layer_norm;
    h["aten::relu"] = un("Relu");
    h["aten::sigmoid"] = un("Sigmoid");
    h["aten::tanh"] = un("Tanh");
    h["aten::exp"] = un("Exp");
    h["aten::cos"] = un("Cos");
    h["aten::sin"] = un("Sin");
    h["aten::log"] = un("Log");
    h["aten::sqrt"] = un("Sqrt");
    h["aten::abs"] = un("Abs");
    h["aten::neg"] = un("Neg");
    h["aten::erf"] = un("Erf");
    h["aten::reciprocal"] = un("Reciprocal");
    h["aten::bitwise_not"] = un("Not");
    h["aten::logical_not"] = un("Not");
    h["aten::rsqrt"] = [](T& t, jit::Node* n) {
      t.emit_to(n->output(), "Reciprocal", {t.emit("Sqrt", {t.in(n->input(0))})});
    };
    h["aten::gelu"] = gelu;
    h["aten::silu"] = silu;
    h["aten::relu6"] = [](T& t, jit::Node* n) { clip(t, n, 0.0, 6.0); };
    h["aten::hardtanh"] = [](T& t, jit::Node* n) {
      clip(t, n, t.double_arg(n->input(1)), t.double_arg(n->input(2)));
    };
    h["aten::clamp"] = [](T& t, jit::Node* n) {
      clip(t, n, optional_double(t, n->input(1)), optional_double(t, n->input(2)));
    };
    h["aten::clamp_min"] = [](T& t, jit::Node* n) { clip(t, n, t.double_arg(n->input(1)), {}); };
    h["aten::clamp_max"] = [](T& t, jit::Node* n) {
      const DType dt = t.dtype(n->input(0));
      t.emit_to(n->output(), "Clip",
                {t.in(n->input(0)), std::string(), t.scalar(t.double_arg(n->input(1)), dt)});
    };
    h["aten::sort"] = sort;
    h["aten::scatter"] = scatter;
    h["aten::empty_like"] = [](T& t, jit::Node* n) { filled(t, n, 0.0); };
    h["aten::empty"] = [](T& t, jit::Node* n) { filled(t, n, 0.0); };
    // Consumed by the lstm.data / gru.data that follows (see rnn()).
    h["aten::_pack_padded_sequence"] = [](T&, jit::Node*) {};
    h["aten::leaky_relu"] = [](T& t, jit::Node* n) {
      t.emit_to(n->output(), "LeakyRelu", {t.in(n->input(0))},
                {{"alpha", static_cast<float>(t.double_arg(n->input(1)))}});
    };
    h["aten::hardswish"] = un("HardSwish");
    h["aten::hardsigmoid"] = [](T& t, jit::Node* n) {
      t.emit_to(n->output(), "HardSigmoid", {t.in(n->input(0))},
                {{"alpha", 1.0f / 6.0f}, {"beta", 0.5f}});
    };
    h["aten::softmax"] = [](T& t, jit::Node* n) { softmax(t, n, "Softmax"); };
    h["aten::log_softmax"] = [](T& t, jit::Node* n) { softmax(t, n, "LogSoftmax"); };
    h["aten::max_pool2d"] = [](T& t, jit::Node* n) { pool(t, n, true); };
    h["aten::max_pool1d"] = [](T& t, jit::Node* n) { pool(t, n, true); };
    h["aten::avg_pool2d"] = [](T& t, jit::Node* n) { pool(t, n, false); };
    h["aten::avg_pool1d"] = [](T& t, jit::Node* n) { pool(t, n, false); };
    h["aten::adaptive_avg_pool2d"] = adaptive_avg_pool;
    h["aten::adaptive_avg_pool1d"] = adaptive_avg_pool;
    for (const char* k : {"aten::view", "aten::reshape", "aten::flatten", "aten::unflatten",
                          "aten::view_as", "aten::reshape_as", "aten::squeeze"}) {
      h[k] = reshape_like;
    }
    h["aten::unsqueeze"] = unsqueeze;
    h["aten::transpose"] = transpose;
    h["aten::permute"] = transpose;
    h["aten::t"] = transpose;
    h["aten::expand"] = expand;
    h["aten::expand_as"] = expand;
    h["aten::add"] = bin("Add");
    h["aten::sub"] = bin("Sub");
    h["aten::mul"] = bin("Mul");
    h["aten::div"] = [](T& t, jit::Node* n) {
      LATHE_CHECK(n->inputs().size() < 3 || t.is_none(n->input(2)), ExportError,
                  "cannot export {}: division with a rounding mode", t.where());
      binary(t, n, "Div");
    };
    h["aten::pow"] = bin("Pow");
    h["aten::maximum"] = bin("Max");
    h["aten::minimum"] = bin("Min");
    h["aten::rsub"] = [](T& t, jit::Node* n) {  // other - alpha·self
      const DType out = t.dtype(n->output());
      std::string self = t.operand(n->input(0), out);
      if (n->inputs().size() > 2 && t.double_arg(n->input(2)) != 1.0) {
        self = t.emit("Mul", {self, t.scalar(t.double_arg(n->input(2)), out)});
      }
      t.emit_to(n->output(), "Sub", {t.operand(n->input(1), out), self});
    };
    h["aten::eq"] = [](T& t, jit::Node* n) { compare(t, n, "Equal", false); };
    h["aten::ne"] = [](T& t, jit::Node* n) { compare(t, n, "Equal", true); };
    h["aten::lt"] = [](T& t, jit::Node* n) { compare(t, n, "Less", false); };
    h["aten::gt"] = [](T& t, jit::Node* n) { compare(t, n, "Greater", false); };
    h["aten::le"] = [](T& t, jit::Node* n) { compare(t, n, "LessOrEqual", false); };
    h["aten::ge"] = [](T& t, jit::Node* n) { compare(t, n, "GreaterOrEqual", false); };
    for (const char* k : {"aten::__and__", "aten::bitwise_and", "aten::logical_and"}) {
      h[k] = [](T& t, jit::Node* n) { logic(t, n, "And"); };
    }
    for (const char* k : {"aten::__or__", "aten::bitwise_or", "aten::logical_or"}) {
      h[k] = [](T& t, jit::Node* n) { logic(t, n, "Or"); };
    }
    h["aten::any"] = [](T& t, jit::Node* n) { any_all(t, n, true); };
    h["aten::all"] = [](T& t, jit::Node* n) { any_all(t, n, false); };
    h["aten::mean"] = [](T& t, jit::Node* n) { reduce(t, n, "ReduceMean"); };
    h["aten::sum"] = [](T& t, jit::Node* n) { reduce(t, n, "ReduceSum"); };
    h["aten::amax"] = [](T& t, jit::Node* n) { reduce(t, n, "ReduceMax"); };
    h["aten::embedding"] = embedding;
    h["aten::select"] = select;
    h["aten::index_select"] = index_select;
    h["aten::slice"] = slice;
    h["aten::cat"] = [](T& t, jit::Node* n) { cat(t, n, false); };
    h["aten::stack"] = [](T& t, jit::Node* n) { cat(t, n, true); };
    for (const char* k : {"aten::split", "aten::split_with_sizes", "aten::chunk",
                          "aten::unsafe_chunk", "aten::unsafe_split", "aten::unbind"}) {
      h[k] = split;
    }
    h["prim::ListUnpack"] = [](T&, jit::Node*) {};  // done by the split before it
    h["aten::zeros"] = [](T& t, jit::Node* n) { filled(t, n, 0.0); };
    h["aten::zeros_like"] = [](T& t, jit::Node* n) { filled(t, n, 0.0); };
    h["aten::new_zeros"] = [](T& t, jit::Node* n) { filled(t, n, 0.0); };
    h["aten::ones"] = [](T& t, jit::Node* n) { filled(t, n, 1.0); };
    h["aten::ones_like"] = [](T& t, jit::Node* n) { filled(t, n, 1.0); };
    h["aten::new_ones"] = [](T& t, jit::Node* n) { filled(t, n, 1.0); };
    h["aten::full"] = [](T& t, jit::Node* n) { filled(t, n, std::nullopt); };
    h["aten::full_like"] = [](T& t, jit::Node* n) { filled(t, n, std::nullopt); };
    h["aten::arange"] = arange;
    h["aten::eye"] = eye;
    h["aten::tril"] = [](T& t, jit::Node* n) { trilu(t, n, false); };
    h["aten::triu"] = [](T& t, jit::Node* n) { trilu(t, n, true); };
    for (const char* k : {"aten::to", "aten::type_as", "aten::_to_copy", "aten::float",
                          "aten::long", "aten::int", "aten::bool"}) {
      h[k] = to_type;
    }
    h["aten::masked_fill"] = masked_fill;
    h["aten::where"] = where;
    h["aten::scaled_dot_product_attention"] = sdpa;
    h["aten::lstm"] = [](T& t, jit::Node* n) { rnn(t, n, true); };
    h["aten::gru"] = [](T& t, jit::Node* n) { rnn(t, n, false); };
    return h;
  }();
  return table;
}

}  // namespace

Graph translate(const TracedGraph& traced, const std::vector<InputSpec>& inputs,
                const std::vector<std::string>& output_names, bool fp16,
                std::unordered_map<std::string, const jit::Value*>* values) {
  Translator t(traced, fp16);
  t.run(inputs, output_names);
  if (values) {
    for (const auto& [value, name] : t.names()) {
      if (value->node()->kind() != c10::prim::Constant) values->emplace(name, value);
    }
  }
  return std::move(t.graph);
}

}  // namespace lathe::onnx::detail

namespace lathe::onnx {

std::vector<std::string> supported_operations() {
  std::vector<std::string> ops;
  for (const auto& [name, handler] : detail::handlers()) {
    if (name.rfind("aten::", 0) == 0) ops.push_back(name);
  }
  return ops;
}

}  // namespace lathe::onnx
