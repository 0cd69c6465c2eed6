// Tracing a forward for export, and learning which sizes follow the dynamic axes.
//
// In C++, x.size(0) is a plain integer, so a traced reshape records the example's batch size as
// a constant. We therefore trace once at the example sizes and once more per dynamic symbol
// with that axis one larger; the graphs have the same operations in the same order, and every
// size or integer constant that changed tells us how it depends on the symbols
// (k12·s0·s1 + k0·s0 + k1·s1 + j). The translator then computes those sizes at run time.
#include "src/onnx/trace.h"

#include <algorithm>
#include <optional>

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/nn/module.h>

#include "lathe/core/error.h"

namespace lathe::onnx::detail {
namespace jit = torch::jit;

int SymSize::plain_symbol() const {
  if (!known || j != 0 || k12 != 0) return -1;
  if (k[0] == 1 && k[1] == 0) return 0;
  if (k[0] == 0 && k[1] == 1) return 1;
  return -1;
}

namespace {

/// Parameters that require grad cannot be recorded as constants: switch that off while tracing.
class NoTrainableParameters {
 public:
  explicit NoTrainableParameters(torch::nn::Module& m) {
    for (auto& p : m.parameters(/*recurse=*/true)) {
      params_.push_back(p);
      flags_.push_back(p.requires_grad());
      p.set_requires_grad(false);
    }
  }
  ~NoTrainableParameters() {
    for (size_t i = 0; i < params_.size(); ++i) params_[i].set_requires_grad(flags_[i]);
  }
  NoTrainableParameters(const NoTrainableParameters&) = delete;
  NoTrainableParameters& operator=(const NoTrainableParameters&) = delete;

 private:
  std::vector<at::Tensor> params_;
  std::vector<bool> flags_;
};

/// Eval mode for the export, the previous mode restored afterwards.
class EvalMode {
 public:
  explicit EvalMode(torch::nn::Module& m) : module_(m), was_training_(m.is_training()) {
    module_.eval();
  }
  ~EvalMode() { module_.train(was_training_); }
  EvalMode(const EvalMode&) = delete;
  EvalMode& operator=(const EvalMode&) = delete;

 private:
  torch::nn::Module& module_;
  bool was_training_;
};

struct Trace {
  std::shared_ptr<jit::Graph> graph;
  std::vector<at::Tensor> outputs;
};

Trace run_trace(const ForwardFn& forward, const std::vector<at::Tensor>& inputs) {
  jit::Stack stack(inputs.begin(), inputs.end());
  const auto fn = [&](jit::Stack in) {
    std::vector<at::Tensor> tensors;
    for (const auto& v : in) tensors.push_back(v.toTensor());
    std::vector<at::Tensor> out = forward(tensors);
    return jit::Stack(out.begin(), out.end());
  };
  try {
    auto [state, out] = jit::tracer::trace(
        std::move(stack), fn, [](const at::Tensor&) { return std::string(); },
        /*strict=*/false, /*force_outplace=*/false);
    Trace t{state->graph, {}};
    for (const auto& v : out) t.outputs.push_back(v.toTensor());
    return t;
  } catch (const lathe::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw ExportError(fmt::format("tracing the forward failed: {}", e.what()));
  }
}

bool is_spatial(const std::string& symbol) {
  return std::find(kSpatialSymbols.begin(), kSpatialSymbols.end(), symbol) !=
         kSpatialSymbols.end();
}

/// The inputs with every axis that carries symbol `s` `by` larger (rows repeat cyclically, so
/// token ids stay valid ids and masks stay masks).
std::vector<at::Tensor> grow(const std::vector<at::Tensor>& inputs,
                             const std::vector<InputSpec>& specs, const std::string& symbol,
                             int64_t by = 1) {
  std::vector<at::Tensor> out = inputs;
  for (size_t i = 0; i < inputs.size() && i < specs.size(); ++i) {
    for (const auto& [axis, name] : specs[i].dynamic_axes) {
      if (name != symbol) continue;
      const int64_t n = out[i].size(axis);
      const at::Tensor index =
          at::arange(n + by, at::TensorOptions().dtype(at::kLong).device(out[i].device()))
              .remainder(n);
      out[i] = out[i].index_select(axis, index).contiguous();
    }
  }
  return out;
}

std::vector<jit::Node*> node_list(jit::Graph& g) {
  std::vector<jit::Node*> nodes;
  for (jit::Node* n : g.nodes()) nodes.push_back(n);
  return nodes;
}

/// How a size depends on the symbols, from its base value and its value with each symbol grown
/// by one.
SymSize explain(int64_t base, const std::vector<int64_t>& grown, const std::vector<Symbol>& syms) {
  SymSize s;
  std::array<int64_t, 2> d{0, 0};
  for (size_t i = 0; i < grown.size(); ++i) d[i] = grown[i] - base;
  if (d[0] != 0 && d[1] != 0) {
    // Both symbols move it: a product k12·s0·s1 + j when the two changes agree on k12.
    const int64_t b0 = syms[0].base, b1 = syms[1].base;
    if (b1 != 0 && b0 != 0 && d[0] % b1 == 0 && d[1] % b0 == 0 && d[0] / b1 == d[1] / b0) {
      s.k12 = d[0] / b1;
      s.j = base - s.k12 * b0 * b1;
      return s;
    }
  }
  s.j = base;
  for (size_t i = 0; i < grown.size(); ++i) {
    s.k[i] = d[i];
    s.j -= d[i] * syms[i].base;
  }
  return s;
}

/// A size that moves with the spatial symbols: ONNX computes it, lathe never needs it.
SymSize unknown_size() {
  SymSize s;
  s.known = false;
  return s;
}

std::vector<int64_t> int_elements(const c10::IValue& v) {
  if (v.isInt()) return {v.toInt()};
  if (v.isIntList()) return v.toIntVector();
  return {};
}

}  // namespace

TracedGraph trace_forward(torch::nn::Module& module, const ForwardFn& forward,
                          const std::vector<at::Tensor>& inputs,
                          const std::vector<InputSpec>& specs) {
  EvalMode eval(module);
  NoTrainableParameters frozen(module);
  at::NoGradGuard no_grad;

  TracedGraph tg;
  // The symbols, each tied to the first input axis that carries it.
  for (size_t i = 0; i < specs.size() && i < inputs.size(); ++i) {
    for (const auto& [axis, name] : specs[i].dynamic_axes) {
      LATHE_CHECK(axis >= 0 && axis < inputs[i].dim(), ExportError,
                  "input '{}': dynamic axis {} does not exist (the example has shape {})",
                  specs[i].name, axis, inputs[i].sizes());
      auto& list = is_spatial(name) ? tg.spatial : tg.symbols;
      bool seen = false;
      for (const auto& s : list) seen = seen || s.name == name;
      if (!seen) list.push_back({name, static_cast<int64_t>(i), axis, inputs[i].size(axis)});
    }
  }
  LATHE_CHECK(tg.symbols.size() <= 2, ExportError,
              "at most two dynamic symbols (e.g. batch and seq) are supported, got {}",
              tg.symbols.size());

  Trace base = run_trace(forward, inputs);
  std::vector<Trace> grown;
  for (const auto& s : tg.symbols) grown.push_back(run_trace(forward, grow(inputs, specs, s.name)));
  // One more trace with every spatial axis grown: what moves with them.
  std::vector<Trace> spatial;
  std::string spatial_names;
  if (!tg.spatial.empty()) {
    std::vector<at::Tensor> bigger = inputs;
    for (const auto& s : tg.spatial) {
      bigger = grow(bigger, specs, s.name, kSpatialGrowth);
      spatial_names += (spatial_names.empty() ? "" : " and ") + s.name;
    }
    try {
      spatial.push_back(run_trace(forward, bigger));
    } catch (const ExportError& e) {
      throw ExportError(fmt::format(
          "the forward does not run when the input's {} grow by {} ({}); it takes one image "
          "size only: export with --dynamic batch",
          spatial_names, kSpatialGrowth, e.what()));
    }
  }

  tg.graph = base.graph;
  tg.outputs = base.outputs;
  const std::vector<jit::Node*> nodes = node_list(*base.graph);
  std::vector<jit::Node*> spatial_nodes;
  if (!spatial.empty()) {
    spatial_nodes = node_list(*spatial.front().graph);
    bool same = spatial_nodes.size() == nodes.size();
    for (size_t i = 0; same && i < nodes.size(); ++i)
      same = nodes[i]->kind() == spatial_nodes[i]->kind();
    LATHE_CHECK(same, ExportError,
                "the forward runs different operations when the input's {} change: it branches "
                "on a size; export with --dynamic batch",
                spatial_names);
  }
  std::vector<std::vector<jit::Node*>> other;
  for (size_t s = 0; s < grown.size(); ++s) {
    other.push_back(node_list(*grown[s].graph));
    bool same = other.back().size() == nodes.size();
    for (size_t i = 0; same && i < nodes.size(); ++i) {
      same = nodes[i]->kind() == other.back()[i]->kind();
    }
    LATHE_CHECK(same, ExportError,
                "the forward runs different operations when '{}' changes from {} to {}: it "
                "branches on a size, which a single ONNX graph cannot express; export with that "
                "axis fixed (--dynamic without '{}')",
                tg.symbols[s].name, tg.symbols[s].base, tg.symbols[s].base + 1,
                tg.symbols[s].name);
  }

  // Sizes of every tensor value (graph inputs, then node outputs) and every integer constant.
  const auto sizes_of = [](const jit::Value* v) -> std::optional<std::vector<int64_t>> {
    auto t = v->type()->cast<c10::TensorType>();
    return t ? t->sizes().concrete_sizes() : std::nullopt;
  };
  // `spatial_peer`: the same value in the spatial trace (nullptr without spatial symbols).
  const auto learn_shape = [&](const jit::Value* v, const std::vector<const jit::Value*>& peers,
                               const jit::Value* spatial_peer) {
    auto sizes = sizes_of(v);
    if (!sizes) return;
    const auto moved = spatial_peer ? sizes_of(spatial_peer) : std::nullopt;
    SymShape shape;
    for (size_t d = 0; d < sizes->size(); ++d) {
      std::vector<int64_t> g;
      for (const jit::Value* p : peers) {
        auto ps = sizes_of(p);
        g.push_back(ps && ps->size() == sizes->size() ? (*ps)[d] : (*sizes)[d]);
      }
      shape.push_back(explain((*sizes)[d], g, tg.symbols));
      if (spatial_peer && (!moved || moved->size() != sizes->size() || (*moved)[d] != (*sizes)[d]))
        shape.back() = unknown_size();
    }
    tg.shapes[v] = std::move(shape);
  };
  for (size_t i = 0; i < base.graph->inputs().size(); ++i) {
    std::vector<const jit::Value*> peers;
    for (const auto& t : grown) peers.push_back(t.graph->inputs()[i]);
    const jit::Value* input = base.graph->inputs()[i];
    learn_shape(input, peers, spatial.empty() ? nullptr : spatial.front().graph->inputs()[i]);
    for (const auto& s : tg.spatial)  // the input axis that carries a spatial symbol is named
      if (s.input == static_cast<int64_t>(i) && tg.shapes.count(input))
        tg.shapes[input].at(static_cast<size_t>(s.axis)).spatial = s.name;
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (size_t o = 0; o < nodes[i]->outputs().size(); ++o) {
      std::vector<const jit::Value*> peers;
      for (const auto& nl : other) peers.push_back(nl[i]->outputs()[o]);
      learn_shape(nodes[i]->outputs()[o], peers,
                  spatial.empty() ? nullptr : spatial_nodes[i]->outputs()[o]);
    }
    if (nodes[i]->kind() != c10::prim::Constant) continue;
    const jit::Value* v = nodes[i]->output();
    auto value = jit::toIValue(v);
    if (!value) continue;
    const std::vector<int64_t> elems = int_elements(*value);
    if (elems.empty()) continue;
    if (!spatial.empty()) {
      const auto moved = jit::toIValue(spatial_nodes[i]->output());
      LATHE_CHECK(moved && int_elements(*moved) == elems, ExportError,
                  "the forward uses the input's {} as a number (constant {} becomes {} when they "
                  "grow, e.g. a reshape to a fixed size); it takes one image size only: export "
                  "with --dynamic batch",
                  spatial_names, fmt::format("{}", fmt::join(elems, ",")),
                  moved ? fmt::format("{}", fmt::join(int_elements(*moved), ",")) : "?");
    }
    SymShape ints;
    for (size_t e = 0; e < elems.size(); ++e) {
      std::vector<int64_t> g;
      for (const auto& nl : other) {
        const std::vector<int64_t> oe = int_elements(*jit::toIValue(nl[i]->output()));
        g.push_back(oe.size() == elems.size() ? oe[e] : elems[e]);
      }
      ints.push_back(explain(elems[e], g, tg.symbols));
    }
    tg.ints[v] = std::move(ints);
  }

  // Constant tensors that are parameters or buffers get their state-dict names.
  std::unordered_map<const c10::TensorImpl*, std::string> by_impl;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {  // first name wins (tied)
    by_impl.emplace(item.value().unsafeGetTensorImpl(), item.key());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    by_impl.emplace(item.value().unsafeGetTensorImpl(), item.key());
  }
  for (jit::Node* n : nodes) {
    if (n->kind() != c10::prim::Constant) continue;
    auto value = jit::toIValue(n->output());
    if (!value || !value->isTensor()) continue;
    auto it = by_impl.find(value->toTensor().unsafeGetTensorImpl());
    if (it != by_impl.end()) tg.parameter_names[n->output()] = it->second;
  }
  return tg;
}

}  // namespace lathe::onnx::detail
