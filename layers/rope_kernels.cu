// CUDA RoPE. A thread owns VEC consecutive frequencies i of one token and up to kHeadsPerThread
// heads: it computes the VEC (cos, sin) pairs once and rotates the (x1, x2) halves of each of
// its heads with two 16-byte loads and stores per head.
#include <cuda_runtime.h>

#include <cmath>

#include "core/cuda/vector_io.cuh"
#include "core/cuda_check.h"
#include "layers/rope_kernels.h"

namespace infllm {
namespace {

constexpr int kHeadsPerThread = 4;
constexpr int kThreads = 256;
constexpr int kMaxHalf = 256;  // head dims up to 512

// cos and sin of p * inv_freq, the angle formed and reduced to [-pi, pi] in double so that
// rounding it to f32 errs by at most pi * 2^-24 rad at any position (see rope_kernels.h).
__device__ __forceinline__ void rope_cos_sin(int64_t p, double inv_freq, float* c, float* s) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  const double angle = double(p) * inv_freq;
  const double turns = rint(angle * (1.0 / kTwoPi));
  const float reduced = float(fma(-turns, kTwoPi, angle));
  sincosf(reduced, s, c);
}

// in, out: [rows = B * T, H, D]; direction +1 (forward) or -1 (backward).
// Thread index = (row * head_groups + head_group) * chunks + chunk, chunk = i / VEC (< 2^31,
// checked by the launcher). The block first tabulates theta^(-2i/D) in double in shared memory.
template <class T, int VEC>
__global__ void rope_kernel(const T* in, T* out, int rows, int T_len, int H, int rotated, int D,
                            double log2_theta, int64_t pos_offset, float direction) {
  __shared__ double inv_freq[kMaxHalf];
  const int half = D / 2;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    inv_freq[i] = exp2(-2.0 * double(i) / double(D) * log2_theta);
  }
  __syncthreads();
  const int chunks = half / VEC;
  const int head_groups = (H + kHeadsPerThread - 1) / kHeadsPerThread;
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= rows * head_groups * chunks) return;
  const int i0 = idx % chunks * VEC;
  const int head0 = idx / chunks % head_groups * kHeadsPerThread;
  const int row = idx / (chunks * head_groups);
  const int64_t p = pos_offset + row % T_len;

  float c[VEC], s[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    rope_cos_sin(p, inv_freq[i0 + j], &c[j], &s[j]);
    s[j] *= direction;
  }
#pragma unroll
  for (int k = 0; k < kHeadsPerThread; ++k) {
    const int h = head0 + k;
    if (h >= H) break;
    const int64_t base = (int64_t(row) * H + h) * D + i0;
    float x1[VEC], x2[VEC], o1[VEC], o2[VEC];
    fused::load_floats<T, VEC>(in + base, x1);
    fused::load_floats<T, VEC>(in + base + half, x2);
    const bool turn = h < rotated;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      o1[j] = turn ? x1[j] * c[j] - x2[j] * s[j] : x1[j];
      o2[j] = turn ? x2[j] * c[j] + x1[j] * s[j] : x2[j];
    }
    fused::store_floats<T, VEC>(out + base, o1);
    fused::store_floats<T, VEC>(out + base + half, o2);
  }
}

template <class T>
void launch_rope(const char* op, const T* in, T* out, int64_t B, int64_t T_len, int64_t H,
                 int64_t D, double theta, int64_t pos_offset, int64_t rotated, float direction,
                 void* stream) {
  INFLLM_CHECK(B > 0 && T_len > 0 && H > 0 && D > 0 && D % 2 == 0 && D / 2 <= kMaxHalf, op,
               ": shape [B, T, H, D] = [", B, ", ", T_len, ", ", H, ", ", D,
               "] must be positive with an even head dim D <= ", 2 * kMaxHalf);
  INFLLM_CHECK(theta > 1.0 && pos_offset >= 0, op, ": theta=", theta,
               " must be > 1 and pos_offset=", pos_offset, " >= 0");
  INFLLM_CHECK(rotated >= 0 && rotated <= H, op, ": rotated_heads=", rotated,
               " must be in [0, H=", H, "]");
  constexpr int kVec = 16 / sizeof(T);
  const bool vec = (D / 2) % kVec == 0 && fused::is_aligned(in, 16) && fused::is_aligned(out, 16);
  const int64_t chunks = (D / 2) / (vec ? kVec : 1);
  const int64_t head_groups = (H + kHeadsPerThread - 1) / kHeadsPerThread;
  const int64_t threads = B * T_len * head_groups * chunks;
  INFLLM_CHECK(threads < (int64_t(1) << 31), op, ": [B, T, H, D] = [", B, ", ", T_len, ", ", H,
               ", ", D, "] is too large for one launch (over 2^31 threads); split the batch");
  const unsigned blocks = unsigned((threads + kThreads - 1) / kThreads);
  auto* s = static_cast<cudaStream_t>(stream);
  const double log2_theta = std::log2(theta);
  if (vec) {
    rope_kernel<T, kVec><<<blocks, kThreads, 0, s>>>(in, out, int(B * T_len), int(T_len), int(H),
                                                     int(rotated), int(D), log2_theta, pos_offset,
                                                     direction);
  } else {
    rope_kernel<T, 1><<<blocks, kThreads, 0, s>>>(in, out, int(B * T_len), int(T_len), int(H),
                                                  int(rotated), int(D), log2_theta, pos_offset,
                                                  direction);
  }
  CUDA_CHECK_LAUNCH();
}

const fused::bf16_t* as_bf16(const uint16_t* p) {
  return reinterpret_cast<const fused::bf16_t*>(p);
}
fused::bf16_t* as_bf16(uint16_t* p) {
  return reinterpret_cast<fused::bf16_t*>(p);
}

}  // namespace

void rope_forward_cuda(const uint16_t* in, uint16_t* out, int64_t B, int64_t T, int64_t H,
                       int64_t D, double theta, int64_t pos_offset, int64_t rotated_heads,
                       void* stream) {
  launch_rope("rope_forward_cuda", as_bf16(in), as_bf16(out), B, T, H, D, theta, pos_offset,
              rotated_heads, 1.0f, stream);
}

void rope_backward_cuda(const uint16_t* dout, uint16_t* din, int64_t B, int64_t T, int64_t H,
                        int64_t D, double theta, int64_t pos_offset, int64_t rotated_heads,
                        void* stream) {
  launch_rope("rope_backward_cuda", as_bf16(dout), as_bf16(din), B, T, H, D, theta, pos_offset,
              rotated_heads, -1.0f, stream);
}

void rope_forward_cuda(const float* in, float* out, int64_t B, int64_t T, int64_t H, int64_t D,
                       double theta, int64_t pos_offset, int64_t rotated_heads, void* stream) {
  launch_rope("rope_forward_cuda", in, out, B, T, H, D, theta, pos_offset, rotated_heads, 1.0f,
              stream);
}

void rope_backward_cuda(const float* dout, float* din, int64_t B, int64_t T, int64_t H, int64_t D,
                        double theta, int64_t pos_offset, int64_t rotated_heads, void* stream) {
  launch_rope("rope_backward_cuda", dout, din, B, T, H, D, theta, pos_offset, rotated_heads, -1.0f,
              stream);
}

}  // namespace infllm
