// The LM head fused with cross-entropy: logits = hidden @ weight^T are produced a chunk of rows
// at a time, the fused kernel turns each chunk into per-row losses and, when a graph is being
// recorded, into dlogits in place; the chunk's contributions to dhidden and dweight are taken
// right away. So the full [N, V] logits (f32 or otherwise) never exist, and backward is a
// scale of the saved gradients by the incoming one.
#pragma once

#include "core/tensor.h"

namespace infllm {

// hidden [N, C], weight [V, C], targets i32 [N] (-1 = ignored). Returns the mean loss over the
// `valid_count` non-ignored targets as a 0-d tensor (f32; f64 for f64 inputs).
// Differentiable with respect to hidden and weight.
Tensor lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                             int64_t valid_count);

}  // namespace infllm
