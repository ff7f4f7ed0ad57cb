// SwiGLU: gate_up [N, 2F] = [gate | up] -> silu(gate) * up [N, F] (Llama's MLP activation).
#pragma once

#include "core/tensor.h"

namespace infllm {

// Differentiable. CPU: f32/f64; CUDA: bf16.
Tensor swiglu(const Tensor& gate_up);

}  // namespace infllm
