// RMSNorm over the last dimension, forward and backward, CPU reference and CUDA.
//   y[n, c] = x[n, c] * rstd[n] * w[c],   rstd[n] = 1 / sqrt(mean_c(x[n, c]^2) + eps)
// Shapes: x, y, dy, dx: [N, C] row-major (N = B * T rows); w, dw: [C]; rstd: [N], saved by the
// forward for the backward.
// Fused residual variant: sum = x + residual is written out (the residual stream going on) and
// normalized; its backward adds `dsum` (the gradient reaching `sum` from its other consumers)
// into dx, which is then the gradient of both x and residual.
// The CPU versions are the reference (Float = float or double; double for gradcheck). The CUDA
// versions take bf16 (as uint16_t bit patterns) with f32 math, rstd and dw in f32; dw is
// reduced over rows without atomics (per-block partial sums in `workspace`, then a fixed-order
// sum), so it is bitwise reproducible.
#pragma once

#include <cstddef>
#include <cstdint>

namespace infllm {

template <class Float>
void rms_norm_forward_cpu(const Float* x, const Float* w, Float* y, Float* rstd, int64_t N,
                          int64_t C, double eps);
template <class Float>
void rms_norm_residual_forward_cpu(const Float* x, const Float* residual, Float* sum,
                                   const Float* w, Float* y, Float* rstd, int64_t N, int64_t C,
                                   double eps);
// x is the normalized input (the `sum` of the residual variant); dsum may be null.
template <class Float>
void rms_norm_backward_cpu(const Float* dy, const Float* x, const Float* w, const Float* rstd,
                           const Float* dsum, Float* dx, Float* dw, int64_t N, int64_t C);

void rms_norm_forward_cuda(const uint16_t* x, const uint16_t* w, uint16_t* y, float* rstd,
                           int64_t N, int64_t C, float eps, void* stream);
// sum = bf16(x + residual); y normalizes the rounded sum, the value the backward reads back.
void rms_norm_residual_forward_cuda(const uint16_t* x, const uint16_t* residual, uint16_t* sum,
                                    const uint16_t* w, uint16_t* y, float* rstd, int64_t N,
                                    int64_t C, float eps, void* stream);
// Bytes of device scratch the backward needs (partial dw sums); depends on N and C only.
size_t rms_norm_backward_cuda_workspace_bytes(int64_t N, int64_t C);
// dw is overwritten (not accumulated). dsum may be null. dx may alias dy or dsum. C <= 14528
// (the per-warp dw accumulators live in shared memory).
void rms_norm_backward_cuda(const uint16_t* dy, const uint16_t* x, const uint16_t* w,
                            const float* rstd, const uint16_t* dsum, uint16_t* dx, float* dw,
                            void* workspace, int64_t N, int64_t C, void* stream);

}  // namespace infllm
