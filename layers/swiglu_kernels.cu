// CUDA SwiGLU: elementwise, a thread owns VEC consecutive hidden units f of one row and reads
// its gate and up values from the two halves of the gate_up row with 16-byte loads.
#include <cuda_runtime.h>

#include "core/cuda/vector_io.cuh"
#include "core/cuda_check.h"
#include "layers/swiglu_kernels.h"

namespace infllm {
namespace {

using fused::bf16_t;

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float g) {
  return 1.0f / (1.0f + __expf(-g));
}

// Thread idx covers row n = idx / (F / VEC), units f = (idx % (F / VEC)) * VEC + [0, VEC).
template <int VEC>
__global__ void swiglu_forward_kernel(const bf16_t* gate_up, bf16_t* h, int64_t N, int64_t F) {
  const int64_t chunks = F / VEC;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= N * chunks) return;
  const int64_t n = idx / chunks;
  const int64_t f = (idx % chunks) * VEC;
  float g[VEC], u[VEC], out[VEC];
  fused::load_floats<bf16_t, VEC>(gate_up + n * 2 * F + f, g);
  fused::load_floats<bf16_t, VEC>(gate_up + n * 2 * F + F + f, u);
#pragma unroll
  for (int i = 0; i < VEC; ++i) out[i] = g[i] * sigmoid(g[i]) * u[i];
  fused::store_floats<bf16_t, VEC>(h + n * F + f, out);
}

// Reads gate, up and dh of its units before writing dgate and dup over the same positions, so
// dgate_up may alias gate_up.
template <int VEC>
__global__ void swiglu_backward_kernel(const bf16_t* dh, const bf16_t* gate_up, bf16_t* dgate_up,
                                       int64_t N, int64_t F) {
  const int64_t chunks = F / VEC;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= N * chunks) return;
  const int64_t n = idx / chunks;
  const int64_t f = (idx % chunks) * VEC;
  float g[VEC], u[VEC], d[VEC], dg[VEC], du[VEC];
  fused::load_floats<bf16_t, VEC>(gate_up + n * 2 * F + f, g);
  fused::load_floats<bf16_t, VEC>(gate_up + n * 2 * F + F + f, u);
  fused::load_floats<bf16_t, VEC>(dh + n * F + f, d);
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    const float sg = sigmoid(g[i]);
    dg[i] = d[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    du[i] = d[i] * g[i] * sg;
  }
  fused::store_floats<bf16_t, VEC>(dgate_up + n * 2 * F + f, dg);
  fused::store_floats<bf16_t, VEC>(dgate_up + n * 2 * F + F + f, du);
}

void check_shape(const char* op, int64_t N, int64_t F) {
  INFLLM_CHECK(N > 0 && F > 0, op, ": rows N=", N, " and hidden width F=", F,
               " must be positive (gate_up is [N, 2F])");
}

unsigned blocks_for(int64_t N, int64_t F, int vec) {
  return unsigned((N * (F / vec) + kThreads - 1) / kThreads);
}

}  // namespace

void swiglu_forward_cuda(const uint16_t* gate_up, uint16_t* h, int64_t N, int64_t F, void* stream) {
  check_shape("swiglu_forward_cuda", N, F);
  const auto* gu = reinterpret_cast<const bf16_t*>(gate_up);
  auto* hb = reinterpret_cast<bf16_t*>(h);
  auto* s = static_cast<cudaStream_t>(stream);
  if (F % 8 == 0 && fused::is_aligned(gate_up, 16) && fused::is_aligned(h, 16)) {
    swiglu_forward_kernel<8><<<blocks_for(N, F, 8), kThreads, 0, s>>>(gu, hb, N, F);
  } else {
    swiglu_forward_kernel<1><<<blocks_for(N, F, 1), kThreads, 0, s>>>(gu, hb, N, F);
  }
  CUDA_CHECK_LAUNCH();
}

void swiglu_backward_cuda(const uint16_t* dh, const uint16_t* gate_up, uint16_t* dgate_up,
                          int64_t N, int64_t F, void* stream) {
  check_shape("swiglu_backward_cuda", N, F);
  const auto* dhb = reinterpret_cast<const bf16_t*>(dh);
  const auto* gu = reinterpret_cast<const bf16_t*>(gate_up);
  auto* dgu = reinterpret_cast<bf16_t*>(dgate_up);
  auto* s = static_cast<cudaStream_t>(stream);
  if (F % 8 == 0 && fused::is_aligned(dh, 16) && fused::is_aligned(gate_up, 16) &&
      fused::is_aligned(dgate_up, 16)) {
    swiglu_backward_kernel<8><<<blocks_for(N, F, 8), kThreads, 0, s>>>(dhb, gu, dgu, N, F);
  } else {
    swiglu_backward_kernel<1><<<blocks_for(N, F, 1), kThreads, 0, s>>>(dhb, gu, dgu, N, F);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace infllm
