// What the CUDA decode kernels share (internal to the attention library):
//   decode_attention.cu  the new token's attention over the cache (flash-decoding: partial
//                        softmax per chunk of key tiles, then a combine)
//   decode_select.cu     its block selection over the compressed keys, and appending compressed
//                        keys as kernels complete
// Both score one token's G query heads of a KV group against tiles of 64 rows (keys or compressed
// keys) with CUDA-core FMAs: a decode step reads every cached row once, so it is bound by memory
// bandwidth, not by tensor-core throughput.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace infllm::attention::cuda::decode {

using bf16 = __nv_bfloat16;

constexpr int kTileRows = 64;  // rows (keys, compressed keys) per shared-memory tile
constexpr int kThreads = 128;  // per CTA; two threads per row when scoring a tile
constexpr int kMaxGroup = 16;  // query heads per KV head (G) the kernels hold in registers

// Row pitch of a K tile in shared memory: 8 bf16 of padding move consecutive rows to other banks,
// so the 16-byte loads of 8 threads reading one column chunk of 8 rows do not conflict.
template <int D>
constexpr int kKeyPitch = D + 8;

// Copies rows [0, count) of a tile (row r at src + r * src_row, D bf16 each, 16-byte aligned) into
// shared memory with `pitch` elements per row; rows from count on are zero-filled.
template <int D>
__device__ __forceinline__ void load_tile(const bf16* src, int64_t src_row, int count, int pitch,
                                          bf16* dst) {
  constexpr int chunks = D / 8;
  for (int i = threadIdx.x; i < kTileRows * chunks; i += kThreads) {
    const int r = i / chunks, c = (i % chunks) * 8;
    uint4 value = make_uint4(0u, 0u, 0u, 0u);
    if (r < count) value = *reinterpret_cast<const uint4*>(src + r * src_row + c);
    *reinterpret_cast<uint4*>(dst + r * pitch + c) = value;
  }
}

// The group's G query heads as f32 in shared memory, [G][D].
template <int D>
__device__ __forceinline__ void load_queries(const bf16* q, int G, float* q_sh) {
  for (int i = threadIdx.x; i < G * D; i += kThreads) q_sh[i] = __bfloat162float(q[i]);
}

// dot[h] = q_sh[h] . row for the heads h = first, first + step, ... < G of this thread. `row` is
// one row of a K tile in shared memory.
template <int D>
__device__ __forceinline__ void row_dots(const float* q_sh, const bf16* row, int G, int first,
                                         int step, float (&dot)[kMaxGroup]) {
#pragma unroll
  for (int m = 0; m < kMaxGroup; ++m) dot[m] = 0.f;
#pragma unroll 2
  for (int c = 0; c < D; c += 8) {
    const uint4 packed = *reinterpret_cast<const uint4*>(row + c);
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&packed);
    float k[8];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __bfloat1622float2(pairs[e]);
      k[2 * e] = f.x;
      k[2 * e + 1] = f.y;
    }
#pragma unroll
    for (int m = 0; m < kMaxGroup; ++m) {
      const int h = first + m * step;
      if (h >= G) break;
      const float* qh = q_sh + h * D + c;
#pragma unroll
      for (int e = 0; e < 8; ++e) dot[m] = fmaf(qh[e], k[e], dot[m]);
    }
  }
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x = fmaxf(x, __shfl_xor_sync(~0u, x, off));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(~0u, x, off);
  return x;
}

}  // namespace infllm::attention::cuda::decode
