// Rotary position embedding (rotate-half) of x [B, T, H, D] at positions pos_offset + t.
#pragma once

#include "core/tensor.h"

namespace infllm {

// Differentiable. CPU: f32/f64; CUDA: bf16/f32.
Tensor rope(const Tensor& x, double theta, int64_t pos_offset = 0);

}  // namespace infllm
