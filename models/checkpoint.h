// Activation checkpointing: run a piece of a model without keeping its activations, recompute
// them in backward (a custom autograd Function).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

namespace lathe::models {

/// fn(x) whose intermediate activations are not kept for backward: only x is saved, and the
/// backward pass runs fn on it again — with the forward's RNG state (dropout draws the same
/// masks) and autocast state — then backpropagates through that. Gradients of x and of every
/// parameter fn uses equal those of fn(x) without checkpointing; the cost is one more forward of
/// fn. When no gradient is wanted (grad mode off, or x does not require grad) it is just fn(x).
/// `fn` must be a pure function of x and the module's state: it is called again later, so it
/// captures what it needs by value. `preserved` are tensors a train-mode forward of fn changes as
/// a side effect (BatchNorm's running statistics): the recomputation leaves them as the forward
/// left them, so they end equal to a run without checkpointing.
///
///   x = checkpointed([block, mask](const at::Tensor& in) { return block->forward(in, mask); }, x);
at::Tensor checkpointed(std::function<at::Tensor(const at::Tensor&)> fn, const at::Tensor& x,
                        std::vector<at::Tensor> preserved = {});

/// How many times checkpointed() has set up a recomputation in this process (calls that kept
/// no activations). The Trainer reads it around its warm-up steps: a step that recomputes in
/// backward cannot be recorded as a CUDA graph.
int64_t checkpointed_calls();

}  // namespace lathe::models
