// SwiGLU activation of a Llama MLP, forward and backward, CPU reference and CUDA.
// Layout: the fused gate_up Linear (weight [2F, C] = W_gate stacked over W_up) gives
// gate_up: [N, 2F], each row = [gate (F values) | up (F values)]. Then, with silu(g) =
// g * sigmoid(g):
//   h[n, f]          = silu(gate[n, f]) * up[n, f]                      h: [N, F]
//   dgate[n, f]      = dh * up * sigmoid(g) * (1 + g * (1 - sigmoid(g)))
//   dup[n, f]        = dh * silu(g)
// and dgate_up: [N, 2F] holds [dgate | dup] in the same layout (the gradient of the gate_up
// Linear's output). dgate_up may equal gate_up (in place). CUDA: bf16 (uint16_t bit patterns)
// with f32 math.
#pragma once

#include <cstdint>

namespace infllm {

template <class Float>
void swiglu_forward_cpu(const Float* gate_up, Float* h, int64_t N, int64_t F);
template <class Float>
void swiglu_backward_cpu(const Float* dh, const Float* gate_up, Float* dgate_up, int64_t N,
                         int64_t F);

void swiglu_forward_cuda(const uint16_t* gate_up, uint16_t* h, int64_t N, int64_t F, void* stream);
void swiglu_backward_cuda(const uint16_t* dh, const uint16_t* gate_up, uint16_t* dgate_up,
                          int64_t N, int64_t F, void* stream);

}  // namespace infllm
