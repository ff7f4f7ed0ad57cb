// CUDA RMSNorm: one warp per row, bf16 in/out, f32 math. Lane l owns the VEC-wide column chunks
// l*VEC, (l+32)*VEC, ...; a row is read from DRAM once and its second pass re-reads it from
// L1/L2 (2 KB per row at C = 1024). The column loops are unrolled 4 times so that a lane has
// four 16-byte loads in flight.
#include <cuda_runtime.h>

#include "core/cuda/vector_io.cuh"
#include "core/cuda_check.h"
#include "layers/rms_norm_kernels.h"

namespace infllm {
namespace {

using fused::bf16_t;

constexpr int kWarpsPerBlock = 4;
// The backward runs at most this many blocks, each writing one partial dw row: fixed by N
// alone (never by the GPU), so the reduction order, and the bits of dw, are too.
constexpr int kMaxBackwardBlocks = 1024;
constexpr size_t kMaxSharedBytes = 227 * 1024;

__device__ __forceinline__ float round_to_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}

// residual == nullptr: y = norm(x). Otherwise sum = bf16(x + residual) is written and y =
// norm(sum), computed from the rounded values the backward will read back.
template <int VEC>
__global__ void rms_norm_forward_kernel(const bf16_t* x, const bf16_t* residual, bf16_t* sum,
                                        const bf16_t* w, bf16_t* y, float* rstd, int64_t N, int C,
                                        float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (n >= N) return;  // whole warps leave together
  const int64_t base = n * C;

  float sum_sq = 0.0f;
#pragma unroll 4
  for (int c = lane * VEC; c < C; c += 32 * VEC) {
    float v[VEC];
    fused::load_floats<bf16_t, VEC>(x + base + c, v);
    if (residual) {
      float r[VEC];
      fused::load_floats<bf16_t, VEC>(residual + base + c, r);
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] = round_to_bf16(v[i] + r[i]);
      fused::store_floats<bf16_t, VEC>(sum + base + c, v);
    }
#pragma unroll
    for (int i = 0; i < VEC; ++i) sum_sq += v[i] * v[i];
  }
  const float r = rsqrtf(fused::warp_sum(sum_sq) / float(C) + eps);
  if (lane == 0) rstd[n] = r;

  const bf16_t* in = residual ? sum : x;  // each lane re-reads only what it wrote itself
#pragma unroll 4
  for (int c = lane * VEC; c < C; c += 32 * VEC) {
    float v[VEC], g[VEC];
    fused::load_floats<bf16_t, VEC>(in + base + c, v);
    fused::load_floats<bf16_t, VEC>(w + c, g);
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[i] = v[i] * r * g[i];
    fused::store_floats<bf16_t, VEC>(y + base + c, v);
  }
}

// Rows n = blockIdx.x * kWarpsPerBlock + warp + k * (gridDim.x * kWarpsPerBlock). Each warp
// accumulates dy * x * rstd over its rows into its own row of shared memory (each lane only
// touches its own columns: no atomics), the block then sums its warps in order into
// dw_partial[blockIdx.x, :]. Column c = chunk * VEC + i lives at slot i * (C / VEC) + chunk, so
// the 32 lanes of a warp hit 32 consecutive words (no bank conflicts).
//   dx = r * (dy * w - x * r^2 * mean(dy * w * x)) + dsum
template <int VEC>
__global__ void rms_norm_backward_kernel(const bf16_t* dy, const bf16_t* x, const bf16_t* w,
                                         const float* rstd, const bf16_t* dsum, bf16_t* dx,
                                         float* dw_partial, int64_t N, int C) {
  extern __shared__ float dw_warp[];  // [kWarpsPerBlock, C]
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int chunks = C / VEC;
  float* my_dw = dw_warp + warp * C;
#pragma unroll 4
  for (int c = lane * VEC; c < C; c += 32 * VEC) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) my_dw[i * chunks + c / VEC] = 0.0f;
  }

  const int64_t row_step = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t n = int64_t(blockIdx.x) * kWarpsPerBlock + warp; n < N; n += row_step) {
    const int64_t base = n * C;
    const float r = rstd[n];
    float dot = 0.0f;
#pragma unroll 4
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
      float g[VEC], v[VEC], wc[VEC];
      fused::load_floats<bf16_t, VEC>(dy + base + c, g);
      fused::load_floats<bf16_t, VEC>(x + base + c, v);
      fused::load_floats<bf16_t, VEC>(w + c, wc);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        dot += g[i] * wc[i] * v[i];
        my_dw[i * chunks + c / VEC] += g[i] * v[i] * r;
      }
    }
    const float correction = r * r * fused::warp_sum(dot) / float(C);
#pragma unroll 4
    for (int c = lane * VEC; c < C; c += 32 * VEC) {
      float g[VEC], v[VEC], wc[VEC], out[VEC];
      fused::load_floats<bf16_t, VEC>(dy + base + c, g);
      fused::load_floats<bf16_t, VEC>(x + base + c, v);
      fused::load_floats<bf16_t, VEC>(w + c, wc);
#pragma unroll
      for (int i = 0; i < VEC; ++i) out[i] = r * (g[i] * wc[i] - v[i] * correction);
      if (dsum) {
        float s[VEC];
        fused::load_floats<bf16_t, VEC>(dsum + base + c, s);
#pragma unroll
        for (int i = 0; i < VEC; ++i) out[i] += s[i];
      }
      fused::store_floats<bf16_t, VEC>(dx + base + c, out);
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = 0.0f;
#pragma unroll
    for (int k = 0; k < kWarpsPerBlock; ++k) acc += dw_warp[k * C + (c % VEC) * chunks + c / VEC];
    dw_partial[int64_t(blockIdx.x) * C + c] = acc;
  }
}

constexpr int kReduceCols = 32;
constexpr int kReduceRows = 16;

// dw[c] = sum_g partial[g, c]: thread row ty sums g = ty, ty + 16, ... in order, then row 0
// adds the 16 row sums in order.
__global__ void sum_partial_rows_kernel(const float* partial, float* dw, int rows, int C) {
  __shared__ float tile[kReduceRows][kReduceCols + 1];
  const int c = blockIdx.x * kReduceCols + threadIdx.x;
  float acc = 0.0f;
  if (c < C) {
    for (int g = threadIdx.y; g < rows; g += kReduceRows) acc += partial[int64_t(g) * C + c];
  }
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float total = 0.0f;
#pragma unroll
    for (int k = 0; k < kReduceRows; ++k) total += tile[k][threadIdx.x];
    dw[c] = total;
  }
}

void check_shape(const char* op, int64_t N, int64_t C) {
  INFLLM_CHECK(N > 0 && C > 0 && C <= (int64_t(1) << 30), op, ": rows N=", N, " and width C=", C,
               " must be positive (C < 2^30); pass x as a contiguous [N, C] tensor");
}

int backward_blocks(int64_t N) {
  const int64_t needed = (N + kWarpsPerBlock - 1) / kWarpsPerBlock;
  return int(needed < kMaxBackwardBlocks ? needed : kMaxBackwardBlocks);
}

void launch_forward(const uint16_t* x, const uint16_t* residual, uint16_t* sum, const uint16_t* w,
                    uint16_t* y, float* rstd, int64_t N, int64_t C, float eps, void* stream) {
  const auto* xb = reinterpret_cast<const bf16_t*>(x);
  const auto* rb = reinterpret_cast<const bf16_t*>(residual);
  auto* sb = reinterpret_cast<bf16_t*>(sum);
  const auto* wb = reinterpret_cast<const bf16_t*>(w);
  auto* yb = reinterpret_cast<bf16_t*>(y);
  const bool vec = C % 8 == 0 && fused::is_aligned(x, 16) && fused::is_aligned(residual, 16) &&
                   fused::is_aligned(sum, 16) && fused::is_aligned(w, 16) &&
                   fused::is_aligned(y, 16);
  const dim3 grid(unsigned((N + kWarpsPerBlock - 1) / kWarpsPerBlock));
  const dim3 block(32 * kWarpsPerBlock);
  auto* s = static_cast<cudaStream_t>(stream);
  if (vec) {
    rms_norm_forward_kernel<8><<<grid, block, 0, s>>>(xb, rb, sb, wb, yb, rstd, N, int(C), eps);
  } else {
    rms_norm_forward_kernel<1><<<grid, block, 0, s>>>(xb, rb, sb, wb, yb, rstd, N, int(C), eps);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void rms_norm_forward_cuda(const uint16_t* x, const uint16_t* w, uint16_t* y, float* rstd,
                           int64_t N, int64_t C, float eps, void* stream) {
  check_shape("rms_norm_forward_cuda", N, C);
  launch_forward(x, nullptr, nullptr, w, y, rstd, N, C, eps, stream);
}

void rms_norm_residual_forward_cuda(const uint16_t* x, const uint16_t* residual, uint16_t* sum,
                                    const uint16_t* w, uint16_t* y, float* rstd, int64_t N,
                                    int64_t C, float eps, void* stream) {
  check_shape("rms_norm_residual_forward_cuda", N, C);
  INFLLM_CHECK(residual && sum,
               "rms_norm_residual_forward_cuda: residual and sum must be non-null");
  launch_forward(x, residual, sum, w, y, rstd, N, C, eps, stream);
}

size_t rms_norm_backward_cuda_workspace_bytes(int64_t N, int64_t C) {
  return size_t(backward_blocks(N)) * size_t(C) * sizeof(float);
}

void rms_norm_backward_cuda(const uint16_t* dy, const uint16_t* x, const uint16_t* w,
                            const float* rstd, const uint16_t* dsum, uint16_t* dx, float* dw,
                            void* workspace, int64_t N, int64_t C, void* stream) {
  check_shape("rms_norm_backward_cuda", N, C);
  const size_t shared = size_t(kWarpsPerBlock) * size_t(C) * sizeof(float);
  INFLLM_CHECK(shared <= kMaxSharedBytes, "rms_norm_backward_cuda: width C=", C, " needs ", shared,
               " bytes of shared memory for the dw accumulators, more than ", kMaxSharedBytes,
               "; widths up to ", kMaxSharedBytes / (kWarpsPerBlock * 4), " are supported");
  INFLLM_CHECK(workspace != nullptr, "rms_norm_backward_cuda: workspace is null; allocate ",
               "rms_norm_backward_cuda_workspace_bytes(N, C) bytes");
  const auto* dyb = reinterpret_cast<const bf16_t*>(dy);
  const auto* xb = reinterpret_cast<const bf16_t*>(x);
  const auto* wb = reinterpret_cast<const bf16_t*>(w);
  const auto* dsb = reinterpret_cast<const bf16_t*>(dsum);
  auto* dxb = reinterpret_cast<bf16_t*>(dx);
  auto* partial = static_cast<float*>(workspace);
  const bool vec = C % 8 == 0 && fused::is_aligned(dy, 16) && fused::is_aligned(x, 16) &&
                   fused::is_aligned(w, 16) && fused::is_aligned(dsum, 16) &&
                   fused::is_aligned(dx, 16);
  const int blocks = backward_blocks(N);
  auto* s = static_cast<cudaStream_t>(stream);
  auto kernel = vec ? rms_norm_backward_kernel<8> : rms_norm_backward_kernel<1>;
  CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)));
  kernel<<<blocks, 32 * kWarpsPerBlock, shared, s>>>(dyb, xb, wb, rstd, dsb, dxb, partial, N,
                                                     int(C));
  CUDA_CHECK_LAUNCH();
  const dim3 reduce_grid(unsigned((C + kReduceCols - 1) / kReduceCols));
  sum_partial_rows_kernel<<<reduce_grid, dim3(kReduceCols, kReduceRows), 0, s>>>(partial, dw,
                                                                                 blocks, int(C));
  CUDA_CHECK_LAUNCH();
}

}  // namespace infllm
