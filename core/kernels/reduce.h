// Reductions over one axis of a contiguous tensor viewed as [outer, n, inner] -> [outer, inner].
// Accumulation is in f32 (f64 for f64 inputs); CUDA results are deterministic (no atomics).
#pragma once

#include "core/tensor.h"

namespace infllm {

enum class ReduceOp { sum, mean, max };

namespace cpu {
void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner, Tensor& out);
}
namespace cuda {
void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner, Tensor& out);
}

}  // namespace infllm
