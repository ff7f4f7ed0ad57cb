// Reverse-mode execution: runs every node reachable from the roots once, in reverse topological
// order, summing gradients that meet at a node, and accumulates into leaves' .grad. Leaf
// gradients of f32/bf16 tensors are accumulated in f32 (f64 for f64 leaves), so several
// micro-batches can add into them without bf16 rounding.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace infllm {

// loss.backward() for a single-element loss: seeds the gradient with 1.
void backward(const Tensor& loss);
// General form: one seed gradient per root (same shape as the root).
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds);

}  // namespace infllm
