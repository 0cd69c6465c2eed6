// Tracing a forward for export, and learning which sizes follow the dynamic axes.
//
// In C++, x.size(0) is a plain integer, so a traced reshape records the example's batch size as
// a constant. We therefore trace once at the example sizes and once more per dynamic symbol
// with that axis one larger; the graphs have the same operations in the same order, and every
// size or integer constant that changed tells us how it depends on the symbols
// (k12·s0·s1 + k0·s0 + k1·s1 + j). The translator then computes those sizes at run time.
#include "src/onnx/trace.h"

#include <ATen/ATen.h>
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

/// The inputs with every axis that carries symbol `s` one larger (rows repeat cyclically, so
/// token ids stay valid ids and masks stay masks).
std::vector<at::Tensor> grow(const std::vector<at::Tensor>& inputs,
                             const std::vector<InputSpec>& specs, const std::string& symbol) {
  std::vector<at::Tensor> out = inputs;
  for (size_t i = 0; i < inputs.size() && i < specs.size(); ++i) {
    for (const auto& [axis, name] : specs[i].dynamic_axes) {
      if (name != symbol) continue;
      const int64_t n = out[i].size(axis);
      const at::Tensor index =
          at::arange(n + 1, at::TensorOptions().dtype(at::kLong).device(out[i].device())).remainder(n);
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
      bool seen = false;
      for (const auto& s : tg.symbols) seen = seen || s.name == name;
      if (!seen) {
        tg.symbols.push_back({name, static_cast<int64_t>(i), axis, inputs[i].size(axis)});
      }
    }
  }
  LATHE_CHECK(tg.symbols.size() <= 2, ExportError,
              "at most two dynamic symbols (e.g. batch and seq) are supported, got {}",
              tg.symbols.size());

  Trace base = run_trace(forward, inputs);
  std::vector<Trace> grown;
  for (const auto& s : tg.symbols) grown.push_back(run_trace(forward, grow(inputs, specs, s.name)));

  tg.graph = base.graph;
  tg.outputs = base.outputs;
  const std::vector<jit::Node*> nodes = node_list(*base.graph);
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
  const auto learn_shape = [&](const jit::Value* v, const std::vector<const jit::Value*>& peers) {
    auto type = v->type()->cast<c10::TensorType>();
    if (!type) return;
    auto sizes = type->sizes().concrete_sizes();
    if (!sizes) return;
    SymShape shape;
    for (size_t d = 0; d < sizes->size(); ++d) {
      std::vector<int64_t> g;
      for (const jit::Value* p : peers) {
        auto pt = p->type()->cast<c10::TensorType>();
        auto ps = pt ? pt->sizes().concrete_sizes() : std::nullopt;
        g.push_back(ps && ps->size() == sizes->size() ? (*ps)[d] : (*sizes)[d]);
      }
      shape.push_back(explain((*sizes)[d], g, tg.symbols));
    }
    tg.shapes[v] = std::move(shape);
  };
  for (size_t i = 0; i < base.graph->inputs().size(); ++i) {
    std::vector<const jit::Value*> peers;
    for (const auto& t : grown) peers.push_back(t.graph->inputs()[i]);
    learn_shape(base.graph->inputs()[i], peers);
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (size_t o = 0; o < nodes[i]->outputs().size(); ++o) {
      std::vector<const jit::Value*> peers;
      for (const auto& nl : other) peers.push_back(nl[i]->outputs()[o]);
      learn_shape(nodes[i]->outputs()[o], peers);
    }
    if (nodes[i]->kind() != c10::prim::Constant) continue;
    const jit::Value* v = nodes[i]->output();
    auto value = jit::toIValue(v);
    if (!value) continue;
    const std::vector<int64_t> elems = int_elements(*value);
    if (elems.empty()) continue;
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
