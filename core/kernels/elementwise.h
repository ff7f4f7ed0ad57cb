// Elementwise kernels. Inputs may be strided views (broadcast dims have stride 0); `out` is
// contiguous with the broadcast shape. CPU handles f32/f64/bf16 (bf16 computed in f32), CUDA
// f32/bf16.
#pragma once

#include "core/tensor.h"

namespace infllm {

enum class UnaryOp {
  neg,
  exp,
  log,
  sqrt,
  rsqrt,
  sigmoid,
  silu,
  silu_grad,
  gelu,
  gelu_grad,
  square
};
enum class BinaryOp { add, sub, mul, div };

const char* unary_op_name(UnaryOp op);
const char* binary_op_name(BinaryOp op);

namespace cpu {
void unary(UnaryOp op, const Tensor& x, Tensor& out);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
// out = a op scalar
void binary_scalar(BinaryOp op, const Tensor& a, double scalar, Tensor& out);
// Converts dtype (same shape); any numeric dtypes.
void cast(const Tensor& x, Tensor& out);
// Strided copy with the same dtype: dst[i] = src[i] over the shape.
void copy_strided(const Tensor& src, Tensor& dst);
}  // namespace cpu

namespace cuda {
void unary(UnaryOp op, const Tensor& x, Tensor& out);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
void binary_scalar(BinaryOp op, const Tensor& a, double scalar, Tensor& out);
void cast(const Tensor& x, Tensor& out);
void copy_strided(const Tensor& src, Tensor& dst);
}  // namespace cuda

}  // namespace infllm
