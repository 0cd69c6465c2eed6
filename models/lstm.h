// torch::nn::LSTM's forward and backward on lathe's CPU kernels: the same parameters and
// mathematics, each step one GEMM on the packed recurrent weight and one fused pass over the cells.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/rnn.h>

#include <tuple>

namespace lathe::models {

/// An LSTM stack's recurrent state: h and c, each (num_layers, B, hidden_size); undefined means
/// zeros (the start of a sequence).
struct LstmState {
  at::Tensor h, c;
};

/// `lstm` over `input`, as lstm->forward(input, state) returns it: the top layer's output —
/// (B, T, H) batch-first, else (T, B, H) — and the final state (h_n, c_n). With `embedding`
/// (V, E) defined, `input` is token ids, (B, T) or (T, B) as the LSTM's batch_first says, looked up
/// in it first: lstm->forward(at::embedding(embedding, ids), state), gradients to the embedding
/// included (no padding_idx, no max_norm); on the CPU an id outside [0, V) is a ModelError naming
/// it. Dropout between layers follows lstm's options and mode.
///
/// Where lathe's kernels can run — a unidirectional LSTM with biases and no proj_size, float32 on
/// the CPU, B, T ≥ 1, outside an ONNX trace and CPU autocast — they run when the first call of the
/// shape class times them faster than torch's LSTM on this machine (lathe/core/kernel_choice.h;
/// LATHE_KERNELS forces a side). There the whole sequence's input projection is one GEMM and each
/// step one GEMM of (B, H) by the recurrent weight, packed once per sequence for lathe's AVX-512
/// kernel (models/packed_gemm.h; at::addmm on other CPUs, and for fewer than 64 rows in all, such
/// as a generation step), then one vectorised pass computes the gates, c and h. The backward runs
/// the steps in reverse the same way and the weight gradients as products over all steps at once,
/// as cuDNN and oneDNN do. With token inputs and a vocabulary smaller than B·T, layer 0's input
/// projection is a (V, 4H) table, E·W_ihᵀ, looked up per token; its gradients go through the same
/// table. That saves the (B·T, E) by (E, 4H) products in forward and backward. Anything else runs
/// torch's lstm.
///
/// Results match torch's within float rounding (test Lstm.MatchesTorchsForwardAndBackward). A
/// backward with create_graph (a gradient penalty) recomputes the layer with ATen's LSTM so that
/// the gradient is differentiable in turn, as torch's is.
///
///   auto [h, state] = lathe::models::lstm_forward(*lstm, ids, embedding->weight);  // h: (B, T, H)
std::tuple<at::Tensor, LstmState> lstm_forward(torch::nn::LSTMImpl& lstm, const at::Tensor& input,
                                               const at::Tensor& embedding = {},
                                               const LstmState& state = {});

/// Whether lathe's kernels can take these arguments; lstm_forward then runs them where they time
/// faster than torch's (else torch's LSTM always).
bool lstm_runs_own_kernels(const torch::nn::LSTMImpl& lstm, const at::Tensor& input,
                           const at::Tensor& embedding = {}, const LstmState& state = {});

}  // namespace lathe::models
