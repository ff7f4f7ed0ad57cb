// Batched matrix product out[b] = alpha * op(a[b]) @ op(b[b]) + beta * out[b], op = transpose
// or not. Contiguous 3-D operands: a [batch|1, M, K] ([.., K, M] if trans_a), b [batch|1, K, N]
// ([.., N, K] if trans_b), out [batch, M, N]; a batch of 1 is broadcast (shared weights).
// CPU: cache-blocked loop with OpenMP (f32/f64/bf16, f32 accumulation for bf16).
// CUDA: cuBLASLt, bf16 or f32 inputs, f32 accumulation.
#pragma once

#include "core/tensor.h"

namespace infllm {

struct MatmulArgs {
  bool trans_a = false;
  bool trans_b = false;
  float alpha = 1.0f;
  float beta = 0.0f;  // beta = 1 accumulates into out (gradient accumulation)
};

namespace cpu {
void matmul(const Tensor& a, const Tensor& b, Tensor& out, const MatmulArgs& args);
}
namespace cuda {
void matmul(const Tensor& a, const Tensor& b, Tensor& out, const MatmulArgs& args);
}

}  // namespace infllm
