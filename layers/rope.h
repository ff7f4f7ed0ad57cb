// Rotary position embedding (rotate-half) of x [B, T, H, D] at positions pos_offset + t.
#pragma once

#include "core/tensor.h"

namespace infllm {

// Differentiable. CPU: f32/f64; CUDA: bf16/f32. Only heads [0, rotated_heads) turn (all when
// negative); the rest pass through, so the packed q, k, v rows of the QKV projection take RoPE on
// their q and k heads in one pass.
Tensor rope(const Tensor& x, double theta, int64_t pos_offset = 0, int64_t rotated_heads = -1);

}  // namespace infllm
