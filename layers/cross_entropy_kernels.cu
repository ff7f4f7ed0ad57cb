// CUDA fused cross-entropy: one block of 512 threads per row. Pass 1 reads the row once with
// 16-byte loads (4 in flight per thread), keeping an online (max, sum of exp) pair per thread and
// a copy of the row in shared memory; one block reduction combines the pairs; pass 2 writes the
// gradient from the shared copy. DRAM sees one read and one write of the logits. Rows too long
// for shared memory (V > kMaxCachedV) re-read the logits in pass 2 (mostly from L2).
#include <cuda_runtime.h>

#include <cmath>

#include "core/cuda/vector_io.cuh"
#include "core/cuda_check.h"
#include "layers/cross_entropy_kernels.h"

namespace infllm {
namespace {

using fused::bf16_t;

constexpr int kThreads = 512;
constexpr int kUnroll = 4;
// Three rows per SM (registers capped at 42): the shared copy of a V = 32000 row allows three.
constexpr int kMinBlocksPerSM = 3;
// Rows up to this many bf16 values are cached in shared memory (100 KB at V = 50304: two rows
// per SM; 64 KB at V = 32000: three).
constexpr int kMaxCachedV = 100 * 1024;
constexpr float kLog2e = 1.4426950408889634f;

// A softmax normalizer in progress: sum = sum_v exp(x_v - max) over the values seen so far.
struct MaxSum {
  float max;
  float sum;
};

__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.0f};  // neither side has seen a value yet
  return {m, a.sum * exp2f((a.max - m) * kLog2e) + b.sum * exp2f((b.max - m) * kLog2e)};
}

template <int VEC>
__device__ __forceinline__ MaxSum add_values(MaxSum acc, const float (&v)[VEC]) {
  float m = acc.max;
#pragma unroll
  for (int i = 0; i < VEC; ++i) m = fmaxf(m, v[i]);
  float sum = acc.sum * exp2f((acc.max - m) * kLog2e);
#pragma unroll
  for (int i = 0; i < VEC; ++i) sum += exp2f((v[i] - m) * kLog2e);
  return {m, sum};
}

// Every thread gets the block's total; a + b == b + a bitwise, so all lanes agree.
__device__ __forceinline__ MaxSum block_reduce(MaxSum acc, MaxSum* scratch) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, acc.max, offset),
                       __shfl_xor_sync(0xffffffffu, acc.sum, offset)};
    acc = combine(acc, other);
  }
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = acc;
  __syncthreads();
  acc = threadIdx.x % 32 < kThreads / 32 ? scratch[threadIdx.x % 32] : MaxSum{-INFINITY, 0.0f};
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, acc.max, offset),
                       __shfl_xor_sync(0xffffffffu, acc.sum, offset)};
    acc = combine(acc, other);
  }
  return acc;
}

// Row layout: [0, head) up to the first 16-byte boundary, then nvec vectors of VEC elements,
// then the tail [tail_begin, V). Thread t takes vectors t, t + kThreads, ... and at most one edge
// element (head and tail hold < 2 * VEC elements). Every element is read and written by the
// same thread (the shared copy too), and the target logit is read before the reduction's
// barrier, so dlogits may alias logits. cache_in_shared: the vectors are kept in the dynamic
// shared memory (nvec * VEC * 2 bytes) between the passes.
template <int VEC>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    cross_entropy_kernel(const bf16_t* logits, const int32_t* targets, float* loss, bf16_t* dlogits,
                         int V, float grad_scale, bool cache_in_shared) {
  using Pack = fused::Packed<bf16_t, VEC>;
  extern __shared__ uint4 shared_row[];
  __shared__ MaxSum scratch[kThreads / 32];
  Pack* cache = reinterpret_cast<Pack*>(shared_row);
  const int64_t n = blockIdx.x;
  const bf16_t* row = logits + n * int64_t(V);
  bf16_t* drow = dlogits ? dlogits + n * int64_t(V) : nullptr;
  const int32_t target = targets[n];
  if (target == -1) {
    if (threadIdx.x == 0) loss[n] = 0.0f;
    if (drow) {
      for (int v = threadIdx.x; v < V; v += kThreads) drow[v] = __float2bfloat16_rn(0.0f);
    }
    return;
  }
  const int misaligned = int((16 - (reinterpret_cast<uintptr_t>(row) & 15)) & 15) / 2;
  const int head = VEC == 1 ? 0 : min(misaligned, V);
  const int nvec = (V - head) / VEC;
  const int tail_begin = head + nvec * VEC;
  const bf16_t* body = row + head;
  const int t = threadIdx.x;
  int edge = -1;
  if (t < head) {
    edge = t;
  } else if (t - head < V - tail_begin) {
    edge = tail_begin + t - head;
  }

  MaxSum acc{-INFINITY, 0.0f};
  for (int j0 = t; j0 < nvec; j0 += kThreads * kUnroll) {
    Pack packs[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = j0 + u * kThreads;
      if (j < nvec) packs[u] = Pack::load(body + j * VEC);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = j0 + u * kThreads;
      if (j < nvec) {
        if (cache_in_shared) cache[j] = packs[u];
        float v[VEC];
        packs[u].to_floats(v);
        acc = add_values(acc, v);
      }
    }
  }
  if (edge >= 0) {
    const float v[1] = {__bfloat162float(row[edge])};
    acc = add_values(acc, v);
  }
  float target_logit = 0.0f;
  if (t == 0) target_logit = target >= 0 && target < V ? __bfloat162float(row[target]) : NAN;

  acc = block_reduce(acc, scratch);
  if (t == 0) loss[n] = logf(acc.sum) + acc.max - target_logit;
  if (!drow) return;

  // dlogits = exp(x - max) / sum * grad_scale - (col == target) * grad_scale
  const float max_log2 = acc.max * kLog2e;
  const float scale_over_sum = grad_scale / acc.sum;
  auto gradient = [&](float x, int col) {
    return exp2f(fmaf(x, kLog2e, -max_log2)) * scale_over_sum - (col == target ? grad_scale : 0.0f);
  };
#pragma unroll 4
  for (int j = t; j < nvec; j += kThreads) {
    const Pack pack = cache_in_shared ? cache[j] : Pack::load(body + j * VEC);
    float v[VEC];
    pack.to_floats(v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[i] = gradient(v[i], head + j * VEC + i);
    fused::store_floats<bf16_t, VEC>(drow + head + j * VEC, v);
  }
  if (edge >= 0) drow[edge] = __float2bfloat16_rn(gradient(__bfloat162float(row[edge]), edge));
}

template <int VEC>
void launch(const bf16_t* logits, const int32_t* targets, float* loss, bf16_t* dlogits, int64_t N,
            int64_t V, float grad_scale, cudaStream_t stream) {
  const bool cache = dlogits != nullptr && V <= kMaxCachedV;
  const size_t shared = cache ? size_t(V) * sizeof(bf16_t) : 0;
  if (shared > 48 * 1024) {
    CUDA_CHECK(cudaFuncSetAttribute(cross_entropy_kernel<VEC>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)));
  }
  cross_entropy_kernel<VEC><<<unsigned(N), kThreads, shared, stream>>>(
      logits, targets, loss, dlogits, int(V), grad_scale, cache);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void cross_entropy_forward_backward_cuda(const uint16_t* logits, const int32_t* targets,
                                         float* loss, uint16_t* dlogits, int64_t N, int64_t V,
                                         float grad_scale, void* stream) {
  INFLLM_CHECK(N > 0 && V > 0 && N < (int64_t(1) << 31) && V < (int64_t(1) << 31),
               "cross_entropy_forward_backward_cuda: rows N=", N, " and vocabulary V=", V,
               " must be positive (logits are [N, V])");
  const auto* lb = reinterpret_cast<const bf16_t*>(logits);
  auto* db = reinterpret_cast<bf16_t*>(dlogits);
  // 16-byte vectors need the rows of logits and dlogits to share their offset from a boundary.
  const bool vec =
      dlogits == nullptr ||
      (reinterpret_cast<uintptr_t>(dlogits) - reinterpret_cast<uintptr_t>(logits)) % 16 == 0;
  auto* s = static_cast<cudaStream_t>(stream);
  if (vec) {
    launch<8>(lb, targets, loss, db, N, V, grad_scale, s);
  } else {
    launch<1>(lb, targets, loss, db, N, V, grad_scale, s);
  }
}

}  // namespace infllm
