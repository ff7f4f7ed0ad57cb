// Shared pieces of the CUDA kernels: the device scope and stream of a launch, dtype dispatch to
// device element types, f32 load/store of f32/bf16, grid sizing and a row reduction.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/cuda/stream.h"
#include "core/cuda_check.h"
#include "core/tensor.h"

namespace infllm::cuda {

// Makes the tensors' GPU current for the scope (launches and pool allocations go to the current
// device) and hands out its compute stream; restores the caller's device afterwards.
class DeviceScope {
 public:
  explicit DeviceScope(Device device) : device_(device.index) {
    INFLLM_CHECK(device.is_cuda(), "CUDA kernel called with a tensor on ", device.str());
    CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device_) CUDA_CHECK(cudaSetDevice(device_));
  }
  ~DeviceScope() {
    if (previous_ != device_) cudaSetDevice(previous_);  // no throw from a destructor
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

  cudaStream_t stream() const { return static_cast<cudaStream_t>(compute_stream(device_)); }
  int device() const { return device_; }

 private:
  int device_;
  int previous_ = 0;
};

[[noreturn]] inline void fail_dtype(const char* op, DType dtype, const char* expected) {
  fail(op, " on CUDA: expected ", expected, ", got ", dtype_name(dtype),
       dtype == DType::f64 ? " (f64 tensors are CPU-only: cast to f32 first or use the cpu device)"
                           : "");
}

// Calls fn.template operator()<T>() with T = float or __nv_bfloat16, the float types the CUDA
// kernels compute in (always in f32 arithmetic).
template <class Fn>
void visit_cuda_float(DType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case DType::f32:
      fn.template operator()<float>();
      return;
    case DType::bf16:
      fn.template operator()<__nv_bfloat16>();
      return;
    default:
      fail_dtype(op, dtype, "f32 or bf16");
  }
}

// Calls fn.template operator()<T>() for every dtype a CUDA tensor may hold (all but f64).
template <class Fn>
void visit_cuda_dtype(DType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case DType::f32:
      fn.template operator()<float>();
      return;
    case DType::bf16:
      fn.template operator()<__nv_bfloat16>();
      return;
    case DType::i32:
      fn.template operator()<int32_t>();
      return;
    case DType::i64:
      fn.template operator()<int64_t>();
      return;
    case DType::u16:
      fn.template operator()<uint16_t>();
      return;
    case DType::u32:
      fn.template operator()<uint32_t>();
      return;
    default:
      fail_dtype(op, dtype, "f32, bf16, i32, i64, u16 or u32");
  }
}

__device__ __forceinline__ float to_float(float x) {
  return x;
}
__device__ __forceinline__ float to_float(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <class T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(x);
  } else {
    return x;
  }
}

// Conversions through f64, the CPU's semantics for cast/fill/arange: ints truncate, bf16 rounds
// via f32 (double -> float -> bf16, both to nearest even).
template <class T>
__device__ __forceinline__ double to_double(T x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return double(__bfloat162float(x));
  } else {
    return double(x);
  }
}

template <class T>
__device__ __forceinline__ T from_double(double x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(float(x));
  } else {
    return T(x);
  }
}

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items; capped, the loop covers the rest.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  return unsigned(std::clamp<int64_t>((n + threads - 1) / threads, 1, int64_t(1) << 16));
}

struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Reduces v over the kRowThreads consecutive threads that share a row: a warp (kRowThreads = 32)
// or the whole block. Every thread gets the result. The combination order is fixed, so the
// result is deterministic. Block mode reuses one shared buffer: the leading barrier keeps a
// previous call's readers ahead of this call's writers.
template <int kRowThreads, class Op>
__device__ __forceinline__ float row_reduce(float v, Op op) {
  static_assert(kRowThreads % 32 == 0 && kRowThreads <= 1024);
#pragma unroll
  for (int lanes = 16; lanes > 0; lanes /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, lanes));
  if constexpr (kRowThreads > 32) {
    __shared__ float partial[kRowThreads / 32];
    __syncthreads();
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    v = partial[0];
#pragma unroll
    for (int w = 1; w < kRowThreads / 32; ++w) v = op(v, partial[w]);
  }
  return v;
}

}  // namespace infllm::cuda
