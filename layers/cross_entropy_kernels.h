// Cross-entropy fused with the softmax and its gradient, CPU reference and CUDA.
// logits: [N, V] row-major (any V), targets: [N] int32 in [0, V) or -1 (ignored).
//   loss[n]       = logsumexp(logits[n, :]) - logits[n, targets[n]]       (0 for ignored rows)
//   dlogits[n, v] = (softmax(logits[n, :])[v] - (v == targets[n])) * grad_scale
//                                                                (a row of 0 for ignored rows)
// i.e. dlogits is the gradient of grad_scale * sum_n loss[n] (grad_scale = 1 / valid tokens
// for a mean). dlogits may be null (loss only) or equal logits (gradient written in place).
// The probabilities are never stored: each row is read once, its max and sum of exponentials
// kept online, and then the gradient written.
// CUDA: logits and dlogits bf16 (uint16_t bit patterns), loss f32, math in f32. A target
// outside [0, V) other than -1 gives a NaN loss for that row (it cannot throw from the GPU); the
// CPU version throws.
#pragma once

#include <cstdint>

namespace infllm {

template <class Float>
void cross_entropy_forward_backward_cpu(const Float* logits, const int32_t* targets, Float* loss,
                                        Float* dlogits, int64_t N, int64_t V, double grad_scale);

void cross_entropy_forward_backward_cuda(const uint16_t* logits, const int32_t* targets,
                                         float* loss, uint16_t* dlogits, int64_t N, int64_t V,
                                         float grad_scale, void* stream);

}  // namespace infllm
