// What the attention kernels of flash_attention.cu and flash_attention_sm90.cu share: the
// problem description, the argument blocks of the row (forward, dQ) and key (dK/dV) passes, and
// two host helpers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "core/cuda_check.h"

namespace infllm::attention::cuda {

using bf16 = __nv_bfloat16;

constexpr int kTile = 64;  // keys per KV tile == sparse block size == query tile of dK/dV
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct Problem {
  int B, T, Hq, Hkv, G, nblocks;  // nblocks = ceil(T / 64) KV tiles
  float scale, scale_log2;        // scale_log2 = scale * log2(e): softmax in base 2
  const int32_t* blocks;          // sparse: [B, T, Hkv, max_blocks]; dense: nullptr
  int max_blocks;
  // Token strides in heads of D elements: q/dq, k/v/dk/dv, out/dout. Kept as head counts so the
  // addresses stay ((b T + t) heads + h) D: with an int64 element stride instead, the sparse
  // forward's K/V copies measured 25% slower (84 -> 104 ms at 128K).
  int q_heads, kv_heads, o_heads;
};

struct RowsArgs {
  const bf16 *q, *k, *v;
  bf16* out;           // forward
  float* lse_out;      // forward
  const bf16* dout;    // backward
  const float* lse;    // backward
  const float* delta;  // backward: rowsum(dO * O), [B, Hq, T]
  bf16* dq;            // backward
};

struct KvArgs {
  const bf16 *q, *k, *v, *dout;
  const float *lse, *delta;
  bf16 *dk, *dv;             // written when splits == 1
  float *dk_part, *dv_part;  // dense with splits > 1: [splits, B, T, Hkv, D] f32
  int splits;
  const int* sorted_tokens;  // sparse: the tokens of each block's segment, ascending
  const int* segment_begin;  // sparse: [B*Hkv*nblocks + 1] offsets into sorted_tokens
  float *dk_acc, *dv_acc;    // sparse: [B, T, Hkv, D] f32 sums of blocks walked in chunks
};

// Calls f with std::integral_constant<int, D> for the supported head dims (64, 128).
template <class F>
void with_head_dim(int D, F&& f) {
  if (D == 64)
    f(std::integral_constant<int, 64>{});
  else
    f(std::integral_constant<int, 128>{});
}

inline int sm_count() {
  int device = 0, count = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

}  // namespace infllm::attention::cuda
