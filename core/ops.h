// Tensor operations: pure functions that allocate their output and dispatch to the CPU or CUDA
// kernel (core/dispatch.h). No autograd here; the differentiable versions in autograd/ call
// these. Shape, dtype and device mismatches throw infllm::Error naming the op and the shapes.
#pragma once

#include <optional>

#include "core/kernels/elementwise.h"
#include "core/kernels/fill.h"
#include "core/kernels/matmul.h"
#include "core/kernels/reduce.h"
#include "core/tensor.h"

namespace infllm::ops {

// Creation.
Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
            Device device = Device::cpu());
Tensor arange(int64_t n, DType dtype = DType::f32, Device device = Device::cpu());
Tensor random(const Shape& shape, const RandomArgs& args, DType dtype = DType::f32,
              Device device = Device::cpu());
Tensor uniform(const Shape& shape, uint64_t seed, uint64_t offset, double low, double high,
               DType dtype = DType::f32, Device device = Device::cpu());
Tensor normal(const Shape& shape, uint64_t seed, uint64_t offset, double mean, double std,
              DType dtype = DType::f32, Device device = Device::cpu());
void fill_(Tensor& out, double value);

// Elementwise; binary ops broadcast numpy-style.
Tensor unary(UnaryOp op, const Tensor& x);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor gelu(const Tensor& x);
Tensor square(const Tensor& x);
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double scalar);
Tensor mul(const Tensor& a, double scalar);
// acc += x in place (same shape; x may broadcast into acc).
void add_(Tensor& acc, const Tensor& x);
Tensor cast(const Tensor& x, DType dtype);
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Reductions. axis may be negative; no axis = the whole tensor (a 0-d tensor).
Tensor reduce(ReduceOp op, const Tensor& x, std::optional<int64_t> axis, bool keepdim = false);
Tensor sum(const Tensor& x, std::optional<int64_t> axis = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::optional<int64_t> axis = {}, bool keepdim = false);
Tensor max(const Tensor& x, std::optional<int64_t> axis = {}, bool keepdim = false);
// A contiguous copy of x broadcast to `shape`.
Tensor expand(const Tensor& x, const Shape& shape);
// Sums a broadcast result back to `shape` (the gradient of broadcasting).
Tensor sum_to(const Tensor& x, const Shape& shape);

// Softmax along the last axis.
Tensor softmax(const Tensor& x);
Tensor log_softmax(const Tensor& x);
Tensor softmax_backward(const Tensor& y, const Tensor& dy, bool log);

// Matrix products on the last two axes: [..., M, K] @ [..., K, N] -> [..., M, N]; leading axes
// broadcast when one side has none (weights). trans_* transposes that operand's last two axes.
// The output has a's dtype unless `out_dtype` says otherwise (bf16 inputs -> f32 out is allowed).
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false,
              std::optional<DType> out_dtype = {});
// out (+)= a @ b with out preallocated; beta = 1 accumulates.
void matmul_into(const Tensor& a, const Tensor& b, Tensor& out, const MatmulArgs& args);

// Embedding gather [V, C] x i32[...] -> [..., C] and its scatter-add backward into dtable.
Tensor embedding(const Tensor& table, const Tensor& index);
void embedding_backward_into(const Tensor& index, const Tensor& dout, Tensor& dtable);

// Concatenation and splitting along an axis (copies).
Tensor concat(const std::vector<Tensor>& parts, int64_t axis);

}  // namespace infllm::ops
