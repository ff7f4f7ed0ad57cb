// CUDA multi-tensor AdamW and gradient sum of squares. The parameters form one sequence of
// chunks of kAdamWChunk elements (a tensor's chunks start at its first_chunk); blocks stride over
// the chunks, find their tensor by binary search over first_chunk, and move 16 bytes per access
// (4 f32, or 4 bf16 for the gradient and the bf16 copy).
#include <cuda_runtime.h>

#include <cmath>

#include "core/cuda/vector_io.cuh"
#include "core/cuda_check.h"
#include "optim/adamw_kernels.h"

namespace infllm {
namespace {

using fused::bf16_t;

constexpr int kThreads = 256;
constexpr int kVec = 4;
constexpr int64_t kMaxStepBlocks = 4096;
// The sum of squares uses at most this many blocks, a number fixed by the chunk count alone, so
// the reduction order (and the result's bits) never changes between runs or GPUs.
constexpr int kMaxNormBlocks = 1024;

// Per-launch constants, formed on the host in double.
struct StepConstants {
  float beta1;
  float beta2;
  float eps;
  float lr;
  float step_size;              // lr / (1 - beta1^t)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^t)
  float grad_scale;
};

// The last tensor whose first chunk is <= chunk.
__device__ __forceinline__ int find_tensor(const AdamWTensor* tensors, int count, int64_t chunk) {
  int lo = 0;
  int hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tensors[mid].first_chunk <= chunk) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

template <int VEC>
__device__ __forceinline__ void load_grad(const AdamWTensor& t, int64_t i, float (&g)[VEC]) {
  if (t.grad_is_bf16) {
    fused::load_floats<bf16_t, VEC>(static_cast<const bf16_t*>(t.grad) + i, g);
  } else {
    fused::load_floats<float, VEC>(static_cast<const float*>(t.grad) + i, g);
  }
}

// Whether every array of t may be accessed kVec elements at a time from a multiple of kVec.
__device__ __forceinline__ bool vector_aligned(const AdamWTensor& t) {
  const auto aligned = [](const void* p, uintptr_t bytes) {
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
  };
  return aligned(t.param, 16) && aligned(t.exp_avg, 16) && aligned(t.exp_avg_sq, 16) &&
         aligned(t.grad, t.grad_is_bf16 ? 8 : 16) && aligned(t.param_bf16, 8);
}

// Calls body.template operator()<V>(i) for the elements [begin, end) of t split among the
// block's threads: V = kVec over the aligned body, V = 1 over the rest.
template <class Body>
__device__ __forceinline__ void for_chunk_elements(const AdamWTensor& t, int64_t begin, int64_t end,
                                                   Body&& body) {
  int64_t scalar_begin = begin;  // begin is a multiple of kAdamWChunk, hence of kVec
  if (vector_aligned(t)) {
    scalar_begin = begin + (end - begin) / kVec * kVec;
#pragma unroll 4  // several loads in flight per thread
    for (int64_t i = begin + int64_t(threadIdx.x) * kVec; i < scalar_begin;
         i += int64_t(blockDim.x) * kVec) {
      body.template operator()<kVec>(i);
    }
  }
  for (int64_t i = scalar_begin + threadIdx.x; i < end; i += blockDim.x) {
    body.template operator()<1>(i);
  }
}

__global__ void __launch_bounds__(kThreads)
    adamw_kernel(const AdamWTensor* tensors, int count, int64_t total_chunks, StepConstants k) {
  for (int64_t chunk = blockIdx.x; chunk < total_chunks; chunk += gridDim.x) {
    const AdamWTensor t = tensors[find_tensor(tensors, count, chunk)];
    const int64_t begin = (chunk - t.first_chunk) * kAdamWChunk;
    const int64_t end = min(begin + kAdamWChunk, t.n);
    const float decay = 1.0f - k.lr * t.lr_scale * t.weight_decay;
    const float step_size = k.step_size * t.lr_scale;
    for_chunk_elements(t, begin, end, [&]<int VEC>(int64_t i) {
      float p[VEC], m[VEC], v[VEC], g[VEC];
      fused::load_floats<float, VEC>(t.param + i, p);
      fused::load_floats<float, VEC>(t.exp_avg + i, m);
      fused::load_floats<float, VEC>(t.exp_avg_sq + i, v);
      load_grad<VEC>(t, i, g);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float gj = g[j] * k.grad_scale;
        m[j] = k.beta1 * m[j] + (1.0f - k.beta1) * gj;
        v[j] = k.beta2 * v[j] + (1.0f - k.beta2) * gj * gj;
        const float denom = sqrtf(v[j]) / k.bias_correction2_sqrt + k.eps;
        p[j] = p[j] * decay - step_size * m[j] / denom;
      }
      fused::store_floats<float, VEC>(t.param + i, p);
      fused::store_floats<float, VEC>(t.exp_avg + i, m);
      fused::store_floats<float, VEC>(t.exp_avg_sq + i, v);
      if (t.param_bf16) {
        fused::store_floats<bf16_t, VEC>(reinterpret_cast<bf16_t*>(t.param_bf16) + i, p);
      }
    });
  }
}

// partial[blockIdx.x] = this block's sum of grad^2 over chunks blockIdx.x, + gridDim.x, ...
__global__ void __launch_bounds__(kThreads)
    grad_sum_squares_kernel(const AdamWTensor* tensors, int count, int64_t total_chunks,
                            float* partial) {
  __shared__ float scratch[32];
  float acc = 0.0f;
  for (int64_t chunk = blockIdx.x; chunk < total_chunks; chunk += gridDim.x) {
    const AdamWTensor t = tensors[find_tensor(tensors, count, chunk)];
    const int64_t begin = (chunk - t.first_chunk) * kAdamWChunk;
    const int64_t end = min(begin + kAdamWChunk, t.n);
    for_chunk_elements(t, begin, end, [&]<int VEC>(int64_t i) {
      float g[VEC];
      load_grad<VEC>(t, i, g);
#pragma unroll
      for (int j = 0; j < VEC; ++j) acc += g[j] * g[j];
    });
  }
  acc = fused::block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block of kMaxNormBlocks threads: thread i holds partial[i].
__global__ void __launch_bounds__(kMaxNormBlocks)
    sum_partials_kernel(const float* partial, int count, float* out) {
  __shared__ float scratch[32];
  const float x = int(threadIdx.x) < count ? partial[threadIdx.x] : 0.0f;
  const float total = fused::block_sum(x, scratch);
  if (threadIdx.x == 0) *out = total;
}

void check_launch(const char* op, const AdamWTensor* device_tensors, int count,
                  int64_t total_chunks) {
  INFLLM_CHECK(device_tensors != nullptr && count > 0 && total_chunks > 0, op, ": ", count,
               " tensors and ", total_chunks,
               " chunks; upload the array planned by adamw_plan_chunks to device memory and pass "
               "its total");
}

int norm_blocks(int64_t total_chunks) {
  return int(total_chunks < kMaxNormBlocks ? total_chunks : kMaxNormBlocks);
}

}  // namespace

void adamw_step_cuda(const AdamWTensor* device_tensors, int count, int64_t total_chunks,
                     const AdamWHyper& hp, void* stream) {
  check_launch("adamw_step_cuda", device_tensors, count, total_chunks);
  INFLLM_CHECK(hp.step >= 1, "adamw_step_cuda: step=", hp.step, " must start at 1");
  StepConstants k;
  k.beta1 = hp.beta1;
  k.beta2 = hp.beta2;
  k.eps = hp.eps;
  k.lr = hp.lr;
  k.step_size = float(double(hp.lr) / (1.0 - std::pow(double(hp.beta1), double(hp.step))));
  k.bias_correction2_sqrt = float(std::sqrt(1.0 - std::pow(double(hp.beta2), double(hp.step))));
  k.grad_scale = hp.grad_scale;
  const int64_t blocks = total_chunks < kMaxStepBlocks ? total_chunks : kMaxStepBlocks;
  adamw_kernel<<<unsigned(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      device_tensors, count, total_chunks, k);
  CUDA_CHECK_LAUNCH();
}

size_t grad_sum_squares_cuda_workspace_bytes(int64_t total_chunks) {
  return size_t(norm_blocks(total_chunks)) * sizeof(float);
}

void grad_sum_squares_cuda(const AdamWTensor* device_tensors, int count, int64_t total_chunks,
                           void* workspace, float* out_sum_squares, void* stream) {
  check_launch("grad_sum_squares_cuda", device_tensors, count, total_chunks);
  INFLLM_CHECK(workspace != nullptr && out_sum_squares != nullptr,
               "grad_sum_squares_cuda: workspace and out_sum_squares must be device buffers (",
               "workspace of grad_sum_squares_cuda_workspace_bytes(total_chunks) bytes)");
  auto* s = static_cast<cudaStream_t>(stream);
  auto* partial = static_cast<float*>(workspace);
  const int blocks = norm_blocks(total_chunks);
  grad_sum_squares_kernel<<<blocks, kThreads, 0, s>>>(device_tensors, count, total_chunks, partial);
  CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, kMaxNormBlocks, 0, s>>>(partial, blocks, out_sum_squares);
  CUDA_CHECK_LAUNCH();
}

}  // namespace infllm
