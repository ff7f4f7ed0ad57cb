// Differentiable tensor functions: each runs the op from core/ops.h and, when a graph is being
// recorded, attaches a node whose backward sits next to its forward in autograd/functions/.
// PyTorch users know these as torch.add, torch.matmul, ...; here they are infllm::add, ...
#pragma once

#include <optional>

#include "core/ops.h"
#include "core/tensor.h"

namespace infllm {

// Elementwise (binary ops broadcast).
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double scalar);
Tensor mul(const Tensor& a, double scalar);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor gelu(const Tensor& x);
Tensor square(const Tensor& x);
Tensor cast(const Tensor& x, DType dtype);

// Reductions (no axis = whole tensor).
Tensor sum(const Tensor& x, std::optional<int64_t> axis = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::optional<int64_t> axis = {}, bool keepdim = false);
Tensor max(const Tensor& x, std::optional<int64_t> axis = {}, bool keepdim = false);

// Softmax along the last axis.
Tensor softmax(const Tensor& x);
Tensor log_softmax(const Tensor& x);

// [..., M, K] @ [..., K, N]; trans_* transposes an operand's last two axes.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// table [V, C] gathered by i32 index [...] -> [..., C]; gradient flows to the table.
Tensor embedding(const Tensor& table, const Tensor& index);

// Shape functions (differentiable views/copies).
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor permute(const Tensor& x, const std::vector<int64_t>& order);
Tensor transpose(const Tensor& x, int64_t a, int64_t b);
Tensor slice(const Tensor& x, int64_t axis, int64_t begin, int64_t end);
Tensor concat(const std::vector<Tensor>& parts, int64_t axis);
Tensor contiguous(const Tensor& x);

}  // namespace infllm
