// Device helpers shared by the fused kernels (layers/*_kernels.cu, optim/adamw_kernels.cu):
// vector loads/stores of VEC elements converted to f32, and deterministic warp/block reductions.
// Include only from .cu files.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

namespace infllm::fused {

using bf16_t = __nv_bfloat16;

__device__ __forceinline__ float to_float(float x) {
  return x;
}
__device__ __forceinline__ float to_float(bf16_t x) {
  return __bfloat162float(x);
}

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16_t from_float<bf16_t>(float x) {
  return __float2bfloat16_rn(x);
}

// The widest plain type of `Bytes` bytes: one load/store instruction moves it (LDG.128 for 16).
template <int Bytes>
struct RawWord;
template <>
struct RawWord<16> {
  using type = uint4;
};
template <>
struct RawWord<8> {
  using type = uint2;
};
template <>
struct RawWord<4> {
  using type = uint32_t;
};
template <>
struct RawWord<2> {
  using type = uint16_t;
};

// VEC consecutive elements of T held as one word; p must be aligned to sizeof(T) * VEC.
template <class T, int VEC>
struct Packed {
  using Word = typename RawWord<sizeof(T) * VEC>::type;
  Word word;

  __device__ __forceinline__ static Packed load(const T* p) {
    return Packed{*reinterpret_cast<const Word*>(p)};
  }
  __device__ __forceinline__ void store(T* p) const { *reinterpret_cast<Word*>(p) = word; }
  __device__ __forceinline__ void to_floats(float (&out)[VEC]) const {
    T vals[VEC];
    memcpy(vals, &word, sizeof(Word));
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = to_float(vals[i]);
  }
  __device__ __forceinline__ static Packed from_floats(const float (&in)[VEC]) {
    T vals[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) vals[i] = from_float<T>(in[i]);
    Packed packed;
    memcpy(&packed.word, vals, sizeof(Word));
    return packed;
  }
};

template <class T, int VEC>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[VEC]) {
  Packed<T, VEC>::load(p).to_floats(out);
}

template <class T, int VEC>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[VEC]) {
  Packed<T, VEC>::from_floats(in).store(p);
}

inline bool is_aligned(const void* p, int bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

// Butterfly sums: every lane ends with the same value, the order fixed by the lane pattern, so
// the result is bitwise reproducible.
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` holds 32 floats of shared memory; the function may be called repeatedly.
__device__ __forceinline__ float block_sum(float x, float* scratch) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = blockDim.x / 32;
  x = warp_sum(x);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(x);
}

}  // namespace infllm::fused
