// lathe's LSTM: the per-step GEMM on a packed weight, the fused cell kernels, the autograd function.
#include "models/lstm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "lathe/core/error.h"
#include "lathe/core/kernel_choice.h"
#include "models/packed_gemm.h"
#include "models/simd.h"

namespace lathe::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

[[gnu::always_inline]] inline float sigmoid(float x) {
  return 1.0f / (1.0f + simd::exp_poly(-x));
}
[[gnu::always_inline]] inline float tanh_of(float x) {  // 2·sigmoid(2x) − 1
  return 2.0f / (1.0f + simd::exp_poly(-2.0f * x)) - 1.0f;
}

/// One step's cells for `rows` batch rows. gates (rows, 4H) holds the pre-activations less the
/// bias (4H), in torch's order i, f, g, o, and is overwritten with the activations (kept for
/// backward); c = f·c_prev + i·g, tanh_c = tanh(c), h = o·tanh_c, each (rows, H).
LATHE_VECTOR_CLONES void cell_forward(float* __restrict gates, const float* __restrict bias,
                                      const float* __restrict c_prev, float* __restrict c,
                                      float* __restrict tanh_c, float* __restrict h, int64_t rows,
                                      int64_t H) {
  for (int64_t r = 0; r < rows; ++r) {
    float* gi = gates + r * 4 * H;
    float* gf = gi + H;
    float* gg = gi + 2 * H;
    float* go = gi + 3 * H;
    const float* cp = c_prev + r * H;
    float* cr = c + r * H;
    float* tr = tanh_c + r * H;
    float* hr = h + r * H;
    for (int64_t j = 0; j < H; ++j) {
      const float i = sigmoid(gi[j] + bias[j]), f = sigmoid(gf[j] + bias[H + j]),
                  g = tanh_of(gg[j] + bias[2 * H + j]), o = sigmoid(go[j] + bias[3 * H + j]);
      const float cn = f * cp[j] + i * g;
      const float t = tanh_of(cn);
      gi[j] = i;
      gf[j] = f;
      gg[j] = g;
      go[j] = o;
      cr[j] = cn;
      tr[j] = t;
      hr[j] = o * t;
    }
  }
}

/// One step backward. acts (rows, 4H) are the step's i, f, g, o; dh = dy + dh_next (the output's
/// gradient and the one through the next step's GEMM); dc (rows, H) comes in as the next step's
/// and leaves as this one's for the step before. Writes the pre-activation gradients d (rows, 4H).
LATHE_VECTOR_CLONES void cell_backward(const float* __restrict acts, const float* __restrict tanh_c,
                                       const float* __restrict c_prev, const float* __restrict dy,
                                       const float* __restrict dh_next, float* __restrict dc,
                                       float* __restrict d, int64_t rows, int64_t H) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* ai = acts + r * 4 * H;
    float* di = d + r * 4 * H;
    const float* tr = tanh_c + r * H;
    const float* cp = c_prev + r * H;
    const float* yr = dy + r * H;
    const float* nr = dh_next + r * H;
    float* dcr = dc + r * H;
    for (int64_t j = 0; j < H; ++j) {
      const float i = ai[j], f = ai[H + j], g = ai[2 * H + j], o = ai[3 * H + j], t = tr[j];
      const float dh = yr[j] + nr[j];
      const float dct = dcr[j] + dh * o * (1.0f - t * t);
      di[j] = dct * g * i * (1.0f - i);
      di[H + j] = dct * cp[j] * f * (1.0f - f);
      di[2 * H + j] = dct * i * (1.0f - g * g);
      di[3 * H + j] = dh * t * o * (1.0f - o);
      dcr[j] = dct * f;
    }
  }
}

/// Batch rows per parallel chunk: steps smaller than ~2K cells stay on one thread.
int64_t row_grain(int64_t H) { return std::max<int64_t>(1, 2048 / H); }

const float* f32(const at::Tensor& t) { return t.const_data_ptr<float>(); }
float* f32_mut(at::Tensor& t) { return t.mutable_data_ptr<float>(); }

/// sums[j] += Σ_r m[r][j] for a row-major (rows, cols) block, in double.
LATHE_VECTOR_CLONES void add_column_sums(const float* __restrict m, int64_t rows, int64_t cols,
                                         double* __restrict sums) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) sums[j] += m[r * cols + j];
}

/// The column sums of a contiguous (rows, cols) float32 matrix, accumulated in double: a bias's
/// gradient (ATen's sum over dim 0 took 0.7 ms for lstm_lm's (1024, 1024) gradients).
at::Tensor column_sums(const at::Tensor& m) {
  const int64_t rows = m.size(0), cols = m.size(1);
  std::vector<double> sums(static_cast<size_t>(cols), 0.0);
  add_column_sums(m.const_data_ptr<float>(), rows, cols, sums.data());
  at::Tensor out = at::empty({cols}, m.options());
  float* o = out.mutable_data_ptr<float>();
  for (int64_t j = 0; j < cols; ++j) o[j] = static_cast<float>(sums[static_cast<size_t>(j)]);
  return out;
}

/// A weight is packed for lathe's kernel when it multiplies at least this many rows in all (one
/// step of generation, B = T = 1, runs at::addmm: packing would cost 30× the product).
constexpr int64_t kPackRows = 64;

/// Row-major (rows, cols) float32 buffer for a PackedMatrix product.
at::Tensor buffer(int64_t rows, int64_t cols, const at::Tensor& like) {
  return at::empty({rows, cols}, like.options());
}

/// The layer's backward when the gradient must itself be differentiable (create_graph, e.g. a
/// gradient penalty): the layer is recomputed with ATen's LSTM on the saved inputs, whose
/// backward autograd can differentiate again, and autograd takes the gradients from it.
variable_list differentiable_backward(AutogradContext* ctx, const variable_list& saved,
                                      const variable_list& grads) {
  const at::Tensor &x = saved[0], &embedding = saved[1], &w_ih = saved[2], &w_hh = saved[3],
                   &h0 = saved[4], &c0 = saved[5], &b_ih = saved[7], &b_hh = saved[8];
  const at::Tensor in = embedding.defined() ? at::embedding(embedding, x) : x;  // (T, B, I)
  auto [y, h_n, c_n] = at::lstm(in, {h0.unsqueeze(0), c0.unsqueeze(0)}, {w_ih, w_hh, b_ih, b_hh},
                                /*has_biases=*/true, /*num_layers=*/1, /*dropout=*/0.0,
                                /*train=*/true, /*bidirectional=*/false, /*batch_first=*/false);
  // The forward's inputs in its argument order; autograd differentiates those that need it.
  const variable_list inputs{embedding.defined() ? at::Tensor() : x, embedding, w_ih, w_hh,
                             b_ih, b_hh, h0, c0};
  variable_list wrt;
  std::vector<size_t> where;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined() && inputs[i].requires_grad() && ctx->needs_input_grad(i)) {
      wrt.push_back(inputs[i]);
      where.push_back(i);
    }
  variable_list outs, out_grads;
  const at::Tensor results[] = {y, h_n.squeeze(0), c_n.squeeze(0)};
  for (size_t i = 0; i < 3; ++i)
    if (grads[i].defined()) {
      outs.push_back(results[i]);
      out_grads.push_back(grads[i]);
    }
  variable_list result(inputs.size());
  if (wrt.empty() || outs.empty()) return result;
  const variable_list g = torch::autograd::grad(outs, wrt, out_grads, /*retain_graph=*/true,
                                                /*create_graph=*/true, /*allow_unused=*/true);
  for (size_t j = 0; j < where.size(); ++j) result[where[j]] = g[j];
  return result;
}

/// One LSTM layer over a whole time-major sequence. Inputs: x (T, B, I) — or ids (T, B) with
/// `embedding` (V, I) — w_ih (4H, I), w_hh (4H, H), b_ih, b_hh (4H), h0, c0 (B, H).
/// Outputs: y (T, B, H), h_n, c_n (B, H). Every product runs on a PackedMatrix.
struct LstmLayerFunction : torch::autograd::Function<LstmLayerFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x,
                               const std::optional<at::Tensor>& embedding_or_none,
                               const at::Tensor& w_ih, const at::Tensor& w_hh,
                               const at::Tensor& b_ih, const at::Tensor& b_hh, const at::Tensor& h0,
                               const at::Tensor& c0) {
    const int64_t T = x.size(0), B = x.size(1), H = w_hh.size(1), I = w_ih.size(1);
    const at::Tensor embedding = embedding_or_none.value_or(at::Tensor());
    const at::Tensor bias = (b_ih + b_hh).contiguous();  // (4H), added in cell_forward
    // The input projection of every step at once: gates (T·B, 4H) = x · W_ihᵀ, or for token ids
    // the rows of table (V, 4H) = E · W_ihᵀ when that is the smaller product.
    const bool by_table = embedding.defined() && embedding.size(0) <= T * B;
    const bool pack = (by_table ? embedding.size(0) : T * B) >= kPackRows;
    const PackedMatrix w_ih_t(w_ih, /*transposed=*/true, pack, /*single_use=*/true);  // (I, 4H)
    at::Tensor gates;
    if (by_table) {
      const at::Tensor e = embedding.contiguous();
      at::Tensor table = buffer(e.size(0), 4 * H, w_hh);
      w_ih_t.multiply(f32(e), I, e.size(0), f32_mut(table), 4 * H, false);
      gates = table.index_select(0, x.reshape({T * B}));
    } else {
      const at::Tensor in = embedding.defined() ? embedding.index_select(0, x.reshape({T * B}))
                                                : x.reshape({T * B, I}).contiguous();
      gates = buffer(T * B, 4 * H, w_hh);
      w_ih_t.multiply(f32(in), I, T * B, f32_mut(gates), 4 * H, false);
    }
    at::Tensor y = at::empty({T, B, H}, w_hh.options());
    at::Tensor c = at::empty({T, B, H}, w_hh.options());
    at::Tensor tanh_c = at::empty({T, B, H}, w_hh.options());
    const PackedMatrix w_hh_t(w_hh, /*transposed=*/true, T * B >= kPackRows);  // (H, 4H)
    float* gp = f32_mut(gates);
    float* yp = f32_mut(y);
    float* cp = f32_mut(c);
    float* tp = f32_mut(tanh_c);
    const float* bp = f32(bias);
    const int64_t step4 = B * 4 * H, step = B * H;
    for (int64_t t = 0; t < T; ++t) {
      const float* h_prev = t ? yp + (t - 1) * step : f32(h0);
      const float* c_prev = t ? cp + (t - 1) * step : f32(c0);
      float* g = gp + t * step4;
      w_hh_t.multiply(h_prev, H, B, g, 4 * H, /*accumulate=*/true);  // gates[t] += h_{t-1}·W_hhᵀ
      at::parallel_for(0, B, row_grain(H), [&](int64_t r0, int64_t r1) {
        cell_forward(g + r0 * 4 * H, bp, c_prev + r0 * H, cp + t * step + r0 * H,
                     tp + t * step + r0 * H, yp + t * step + r0 * H, r1 - r0, H);
      });
    }
    ctx->saved_data["by_table"] = by_table;
    ctx->saved_data["acts"] = gates;
    ctx->saved_data["c"] = c;
    ctx->saved_data["tanh_c"] = tanh_c;
    ctx->save_for_backward({x, embedding, w_ih, w_hh, h0, c0, y, b_ih, b_hh});
    at::Tensor h_n = y[T - 1].clone(), c_n = c[T - 1].clone();
    return {y, h_n, c_n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    if (at::GradMode::is_enabled()) return differentiable_backward(ctx, saved, grads);
    const at::Tensor &x = saved[0], &embedding = saved[1], &w_ih = saved[2], &w_hh = saved[3],
                     &h0 = saved[4], &c0 = saved[5], &y = saved[6];
    const at::Tensor acts = ctx->saved_data["acts"].toTensor();
    const at::Tensor c = ctx->saved_data["c"].toTensor();
    const at::Tensor tanh_c = ctx->saved_data["tanh_c"].toTensor();
    const bool by_table = ctx->saved_data["by_table"].toBool();
    const int64_t T = x.size(0), B = x.size(1), H = w_hh.size(1), I = w_ih.size(1);
    const int64_t G = 4 * H;
    const auto zeros = [&](at::IntArrayRef size) { return at::zeros(size, w_hh.options()); };

    const at::Tensor dy = grads[0].defined() ? grads[0].contiguous() : zeros({T, B, H});
    at::Tensor dh_next = grads[1].defined() ? grads[1].contiguous().clone() : zeros({B, H});
    at::Tensor dc = grads[2].defined() ? grads[2].contiguous().clone() : zeros({B, H});
    at::Tensor dg = at::empty({T, B, G}, w_hh.options());  // pre-activation gradients

    const PackedMatrix w_hh_packed(w_hh, /*transposed=*/false, T * B >= kPackRows);  // (4H, H)
    const float* ap = f32(acts);
    const float* cp = f32(c);
    const float* tp = f32(tanh_c);
    const float* dyp = f32(dy);
    float* dgp = f32_mut(dg);
    float* dnp = f32_mut(dh_next);
    float* dcp = f32_mut(dc);
    const int64_t step = B * H;
    for (int64_t t = T - 1; t >= 0; --t) {
      const float* c_prev = t ? cp + (t - 1) * step : f32(c0);
      at::parallel_for(0, B, row_grain(H), [&](int64_t r0, int64_t r1) {
        cell_backward(ap + (t * B + r0) * G, tp + t * step + r0 * H, c_prev + r0 * H,
                      dyp + t * step + r0 * H, dnp + r0 * H, dcp + r0 * H, dgp + (t * B + r0) * G,
                      r1 - r0, H);
      });
      w_hh_packed.multiply(dgp + t * B * G, G, B, dnp, H, false);  // dh_{t-1} = dgates[t]·W_hh
    }

    // The weight gradients over all steps at once, each dgatesᵀ · (what the step multiplied):
    // W_hh's with h_{t-1} (h0, then y[0..T-2]), W_ih's with the inputs; dg as (T·B, 4H).
    at::Tensor d_bias;  // (4H): the sum of dg's rows — of d_table's, when there is one
    at::Tensor d_w_hh = buffer(G, H, w_hh);
    PackedMatrix(h0, false, true, /*single_use=*/true)
        .multiply(dgp, G, G, f32_mut(d_w_hh), H, false, /*a_transposed=*/true);
    if (T > 1)
      PackedMatrix(y.narrow(0, 0, T - 1).view({(T - 1) * B, H}), false, true, true)
          .multiply(dgp + B * G, G, G, f32_mut(d_w_hh), H, true, /*a_transposed=*/true);
    const int64_t ih_rows = by_table ? embedding.size(0) : T * B;  // rows w_ih_packed multiplies
    const PackedMatrix w_ih_packed(w_ih, /*transposed=*/false, ih_rows >= kPackRows,
                                   /*single_use=*/true);  // (4H, I)
    at::Tensor d_w_ih = buffer(G, I, w_hh), d_x, d_embedding;
    if (embedding.defined()) {
      const at::Tensor ids = x.reshape({T * B});
      if (by_table) {  // gates = table[ids]: the table's gradient, then the table's inputs'
        const at::Tensor d_table = zeros({embedding.size(0), G}).index_add_(0, ids, dg.view({T * B, G}));
        d_bias = column_sums(d_table);
        PackedMatrix(embedding.contiguous(), false, true, true)
            .multiply(f32(d_table), G, G, f32_mut(d_w_ih), I, false, /*a_transposed=*/true);
        if (ctx->needs_input_grad(1)) {
          d_embedding = buffer(embedding.size(0), I, w_hh);
          w_ih_packed.multiply(f32(d_table), G, embedding.size(0), f32_mut(d_embedding), I, false);
        }
      } else {
        const at::Tensor in = embedding.index_select(0, ids);  // (T·B, I)
        PackedMatrix(in, false, true, true).multiply(dgp, G, G, f32_mut(d_w_ih), I, false, true);
        if (ctx->needs_input_grad(1)) {
          at::Tensor d_in = buffer(T * B, I, w_hh);
          w_ih_packed.multiply(dgp, G, T * B, f32_mut(d_in), I, false);
          d_embedding = zeros(embedding.sizes()).index_add_(0, ids, d_in);
        }
      }
    } else {
      PackedMatrix(x.reshape({T * B, I}), false, true, true)
          .multiply(dgp, G, G, f32_mut(d_w_ih), I, false, true);
      if (ctx->needs_input_grad(0)) {
        d_x = at::empty({T, B, I}, w_hh.options());
        w_ih_packed.multiply(dgp, G, T * B, f32_mut(d_x), I, false);
      }
    }
    if (!d_bias.defined()) d_bias = column_sums(dg.view({T * B, G}));
    return {d_x, d_embedding, d_w_ih, d_w_hh, d_bias, d_bias.clone(), dh_next, dc};
  }
};

}  // namespace

bool lstm_runs_own_kernels(const torch::nn::LSTMImpl& lstm, const at::Tensor& input,
                           const at::Tensor& embedding, const LstmState& state) {
  const auto& o = lstm.options;
  if (o.bidirectional() || o.proj_size() != 0 || !o.bias()) return false;
  if (torch::jit::tracer::isTracing() || at::autocast::is_autocast_enabled(at::kCPU)) return false;
  const at::Tensor& first = embedding.defined() ? embedding : input;
  if (!first.device().is_cpu() || first.scalar_type() != at::kFloat) return false;
  if (embedding.defined() ? (input.dim() != 2 || at::isFloatingType(input.scalar_type()))
                          : input.dim() != 3)
    return false;
  if (input.size(0) == 0 || input.size(1) == 0 || !input.device().is_cpu()) return false;
  for (const at::Tensor& w : lstm.all_weights())
    if (!w.device().is_cpu() || w.scalar_type() != at::kFloat) return false;
  for (const at::Tensor& s : {state.h, state.c})
    if (s.defined() && (!s.device().is_cpu() || s.scalar_type() != at::kFloat)) return false;
  return true;
}

namespace {

/// lathe's kernels over the stack, as lstm_forward returns it; dropout between the layers when
/// `dropout` (and the LSTM's options and mode ask for it).
std::tuple<at::Tensor, LstmState> own_stack(const torch::nn::LSTMImpl& lstm, const at::Tensor& input,
                                            const at::Tensor& embedding, const LstmState& state,
                                            const std::vector<at::Tensor>& w, bool dropout) {
  const auto& o = lstm.options;
  // Time-major inside: x (T, B, ·).
  at::Tensor x = o.batch_first() ? input.transpose(0, 1).contiguous() : input.contiguous();
  const int64_t B = x.size(1), H = o.hidden_size(), L = o.num_layers();
  const at::Tensor zero = at::zeros({B, H}, w[1].options());
  std::vector<at::Tensor> h_n, c_n;
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor h0 = state.h.defined() ? state.h[l].contiguous() : zero;
    const at::Tensor c0 = state.c.defined() ? state.c[l].contiguous() : zero;
    // The embedding as an optional: the autograd function's inputs must be defined tensors.
    std::optional<at::Tensor> emb;
    if (l == 0 && embedding.defined()) emb = embedding;
    variable_list out = LstmLayerFunction::apply(x, emb, w[4 * l], w[4 * l + 1], w[4 * l + 2],
                                                 w[4 * l + 3], h0, c0);
    x = out[0];
    if (dropout && l + 1 < L) x = at::dropout(x, o.dropout(), lstm.is_training());
    h_n.push_back(out[1]);
    c_n.push_back(out[2]);
  }
  at::Tensor y = o.batch_first() ? x.transpose(0, 1).contiguous() : x;
  return {y, LstmState{at::stack(h_n), at::stack(c_n)}};
}

/// Whether lathe's kernels run this call rather than torch's LSTM, by lathe/core/kernel_choice.h.
/// The shape class: batch, sequence length rounded up to a power of two, input (features, or
/// token ids with the vocabulary and embedding sizes), hidden size, layers, and whether a backward
/// follows. The trial runs the stack on the call's own tensors (detached copies; no dropout, so no
/// random draws), and then the gradients of every weight and input that asks for one.
bool own_kernels_chosen(const torch::nn::LSTMImpl& lstm, const at::Tensor& input,
                        const at::Tensor& embedding, const LstmState& state) {
  const auto& o = lstm.options;
  const std::vector<at::Tensor> w = lstm.all_weights();
  const auto needs = [](const at::Tensor& t) { return t.defined() && t.requires_grad(); };
  bool train = needs(input) || needs(embedding) || needs(state.h) || needs(state.c);
  for (const at::Tensor& t : w) train = train || needs(t);
  train = train && at::GradMode::is_enabled();
  const int64_t B = input.size(o.batch_first() ? 0 : 1), T = input.size(o.batch_first() ? 1 : 0);
  const std::string in =
      embedding.defined() ? fmt::format("ids V={} E={}", embedding.size(0), embedding.size(1))
                          : fmt::format("I={}", input.size(2));
  const std::string shape_class =
      fmt::format("B={} T<=2^{} {} H={} layers={} {}", B,
                  std::bit_width(static_cast<uint64_t>(T - 1)), in, o.hidden_size(),
                  o.num_layers(), train ? "forward+backward" : "forward");
  const auto side = kernels::choose("lstm", shape_class, [&](kernels::Side s) {
    const at::AutoGradMode grad_mode(train);
    const auto leaf = [&](const at::Tensor& t) {
      return t.defined() ? t.detach().requires_grad_(train && t.requires_grad()) : t;
    };
    std::vector<at::Tensor> weights, wrt;
    for (const at::Tensor& t : w) weights.push_back(t.detach().requires_grad_(train));
    const at::Tensor x = at::isFloatingType(input.scalar_type()) ? leaf(input) : input;
    const at::Tensor emb = leaf(embedding);
    const LstmState st{leaf(state.h), leaf(state.c)};
    at::Tensor y;
    if (s == kernels::Side::lathe) {
      y = std::get<0>(own_stack(lstm, x, emb, st, weights, /*dropout=*/false));
    } else {
      const at::Tensor seq = emb.defined() ? at::embedding(emb, x) : x;
      const int64_t L = o.num_layers(), H = o.hidden_size();
      const at::Tensor zeros = at::zeros({L, B, H}, w[0].options());
      const at::Tensor h0 = st.h.defined() ? st.h : zeros, c0 = st.c.defined() ? st.c : zeros;
      y = std::get<0>(at::lstm(seq, {h0, c0}, weights, /*has_biases=*/true, L, /*dropout=*/0.0,
                               lstm.is_training(), /*bidirectional=*/false, o.batch_first()));
    }
    if (!train) return;
    for (const at::Tensor& t : {x, emb, st.h, st.c}) if (needs(t)) wrt.push_back(t);
    wrt.insert(wrt.end(), weights.begin(), weights.end());
    torch::autograd::grad({y}, wrt, {at::ones_like(y)}, /*retain_graph=*/false,
                          /*create_graph=*/false, /*allow_unused=*/true);
  });
  return side == kernels::Side::lathe;
}

}  // namespace

std::tuple<at::Tensor, LstmState> lstm_forward(torch::nn::LSTMImpl& lstm, const at::Tensor& input,
                                               const at::Tensor& embedding,
                                               const LstmState& state) {
  if (embedding.defined() && input.device().is_cpu() && input.numel() > 0) {
    const auto [lo, hi] = at::aminmax(input);
    const int64_t V = embedding.size(0), low = lo.item<int64_t>(), high = hi.item<int64_t>();
    LATHE_CHECK(low >= 0 && high < V, ModelError,
                "lstm: token id {} is outside the embedding's {} rows (ids must be in [0, {})): "
                "the data's vocabulary is larger than the model's vocab_size, or an id is "
                "negative",
                low < 0 ? low : high, V, V);
  }
  if (!lstm_runs_own_kernels(lstm, input, embedding, state) ||
      !own_kernels_chosen(lstm, input, embedding, state)) {
    const at::Tensor in = embedding.defined() ? at::embedding(embedding, input) : input;
    std::optional<std::tuple<at::Tensor, at::Tensor>> hx;
    if (state.h.defined()) hx = std::make_tuple(state.h, state.c);
    auto [out, hc] = lstm.forward(in, hx);
    return {out, LstmState{std::get<0>(hc), std::get<1>(hc)}};
  }
  return own_stack(lstm, input, embedding, state, lstm.all_weights(), /*dropout=*/true);
}

}  // namespace lathe::models
