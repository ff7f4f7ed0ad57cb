// Rotary position embedding (rotate-half convention), forward and backward, CPU reference and
// CUDA. For x: [B, T, H, D] row-major, token t at position p = pos_offset + t, head dim split in
// halves x1 = x[..., :D/2], x2 = x[..., D/2:] and i < D/2:
//   angle = p * theta^(-2i/D)
//   out[..., i]       = x1[i] * cos(angle) - x2[i] * sin(angle)
//   out[..., D/2 + i] = x2[i] * cos(angle) + x1[i] * sin(angle)
// The backward is the same rotation by -angle (the rotation is orthogonal). `out` may equal
// `in` (in place). Only heads h < rotated_heads turn; the others are copied unchanged (the v
// heads of a packed q/k/v tensor).
//
// Precision at long context: the CUDA kernel forms p * theta^(-2i/D) in double, reduces it to
// [-pi, pi] in double, and only then rounds to f32 for sincosf. The angle error is thus at most
// pi * 2^-24 ~= 1.9e-7 rad at every position, T = 131072 included, so cos/sin are within ~3e-7
// of exact. (Forming the angle in f32, as p * inv_freq, errs by up to half an f32 ulp of the
// angle: 0.004 rad at p = 131071, i = 0, a relative error of 4e-3 in the sin term.) The f32
// CUDA path is tested against the f64 reference at positions near 131072 to 1e-5.
#pragma once

#include <cstdint>

namespace infllm {

template <class Float>
void rope_forward_cpu(const Float* in, Float* out, int64_t B, int64_t T, int64_t H, int64_t D,
                      double theta, int64_t pos_offset, int64_t rotated_heads);
template <class Float>
void rope_backward_cpu(const Float* dout, Float* din, int64_t B, int64_t T, int64_t H, int64_t D,
                       double theta, int64_t pos_offset, int64_t rotated_heads);

// bf16 (uint16_t bit patterns) and f32 tensors; math in f32 with the angle as above. D <= 512.
void rope_forward_cuda(const uint16_t* in, uint16_t* out, int64_t B, int64_t T, int64_t H,
                       int64_t D, double theta, int64_t pos_offset, int64_t rotated_heads,
                       void* stream);
void rope_backward_cuda(const uint16_t* dout, uint16_t* din, int64_t B, int64_t T, int64_t H,
                        int64_t D, double theta, int64_t pos_offset, int64_t rotated_heads,
                        void* stream);
void rope_forward_cuda(const float* in, float* out, int64_t B, int64_t T, int64_t H, int64_t D,
                       double theta, int64_t pos_offset, int64_t rotated_heads, void* stream);
void rope_backward_cuda(const float* dout, float* din, int64_t B, int64_t T, int64_t H, int64_t D,
                        double theta, int64_t pos_offset, int64_t rotated_heads, void* stream);

}  // namespace infllm
