// What the Hopper (sm_90a) attention kernels share: CTA shapes, the copy of row tiles into
// wgmma's swizzled shared-memory layout, the one-tile dK/dV step (dense and sparse backward), the
// store of a thread's dK/dV rows, dQ += dS K from a dS^T tile into f32 query sums (the fused dense
// and sparse backward), and the host-side launch helper.
//
// Operand tiles live in shared memory in the 128B-swizzled layout of wgmma.cuh and are copied there
// with cp.async, one tile ahead of the MMAs that read them. Kernels compile their bodies only under
// __CUDA_ARCH_FEAT_SM90_ALL (the compute_80 PTX of these files is empty; sm90::available() keeps
// other GPUs on the portable kernels).
#pragma once

#include <cuda_runtime.h>

#include "attention/flash_attention_mma.cuh"
#include "attention/flash_attention_problem.cuh"
#include "attention/wgmma.cuh"
#include "core/cuda_check.h"

namespace infllm::attention::cuda::sm90 {

using mma::cp_async_16;
using mma::cp_async_4;
using mma::cp_async_commit;
using mma::cp_async_wait;
using mma::exp2_on_fma;
using mma::fast_exp2;
using mma::pack_bf16;
using wgmma::k_major;
using wgmma::mn_major;
using wgmma::tile_offset;

constexpr int kThreads = 256;  // two warpgroups
constexpr int kRows = 128;     // rows kernel: query rows per CTA; dK/dV kernel: keys per CTA
constexpr int kDkdvQueries = 64;
constexpr int kSparseDkdvThreads = 128;  // one warpgroup

// Dynamic shared memory starts at a 1024-byte boundary (the 128B swizzle needs it); the extra
// 1024 bytes of every allocation pay for rounding up if it ever does not.
__device__ __forceinline__ bf16* aligned_smem(unsigned char* raw) {
  const uint32_t pad = (1024 - (mma::smem_u32(raw) & 1023)) & 1023;
  return reinterpret_cast<bf16*>(raw + pad);
}

// Rows [row0, row0 + kCopyRows) of head `head` of a [B, T, heads, D] tensor into rows
// tile_row0 .. of a swizzled [kTileRows][D] tile, by all kCopyThreads threads of the CTA; rows
// >= T are zero-filled.
template <int D, int kTileRows, int kCopyThreads = kThreads, int kCopyRows = kTileRows>
__device__ void load_tile(bf16* tile, const bf16* src, int b, int head, int heads, int row0, int T,
                          int tile_row0 = 0) {
  constexpr int kChunks = D / 8, kRowsPerStep = kCopyThreads / kChunks;
  static_assert(kCopyRows % kRowsPerStep == 0);
  const int chunk = threadIdx.x % kChunks, r0 = threadIdx.x / kChunks;
  const bf16* from = src + ((size_t(b) * T + row0 + r0) * heads + head) * D + chunk * 8;
  const size_t step = size_t(kRowsPerStep) * heads * D;
#pragma unroll
  for (int i = 0; i < kCopyRows / kRowsPerStep; ++i) {
    const int row = r0 + i * kRowsPerStep;
    const bool valid = row0 + row < T;
    cp_async_16(mma::smem_u32(tile + tile_offset<kTileRows>(tile_row0 + row, chunk * 8)),
                valid ? from + i * step : src, valid);
  }
}

// threadIdx.x / 128, computed so that the compiler knows it is the same in every lane of a warp
// (otherwise it treats branches on it as divergent and serializes the wgmmas behind them).
__device__ __forceinline__ int warpgroup_index() {
  return __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0);
}

// Waits for this thread's copies, publishes them to the tensor cores of every warpgroup.
__device__ __forceinline__ void tiles_landed() {
  cp_async_wait<0>();
  wgmma::fence_async_proxy();
  __syncthreads();
}

// Named barrier `id` (1 .. 15; 0 is __syncthreads') for `threads` threads, whole warps.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// One tile of kQ queries (64 or 128) of a dK/dV walk for this warpgroup's 64 keys (rows
// key_row0 .. +63 of the [kKeyRows][D] K and V tiles): S^T = K Q^T, dP^T = V dO^T (m64 x kQ
// each), P^T and dS^T from the saved lse and delta, dV += P^T dO, dK += dS^T Q (kQ / 16 k-steps
// over the queries, in query order: two 64-query tiles in turn add the same terms in the same
// order as one 128-query tile). visible(col, r): query column col sees the thread's key r
// (accumulator register i holds key (i % 4) / 2, column 8 (i / 4) + 2 (lane % 4) + i % 2).
// Given ds_tile (the caller's [kKeyRows keys][kQ queries] dS^T tile, 1024-byte aligned), dS^T
// is also stored in its rows key_row0 .. +63 in bf16 (the values dK uses) for the caller's
// dQ += dS K (add_dq). while_mmas_run() runs after the dV and dK MMAs are issued and before they
// are waited for: the caller may issue its own MMAs there (dQ from the stored dS^T), and wait for
// them and these together.
struct NothingMore {
  __device__ void operator()() const {}
};
template <int D, int kKeyRows, int kQ = kDkdvQueries, class Visible,
          class WhileMmasRun = NothingMore>
__device__ __forceinline__ void dkdv_tile(float (&dk)[D / 2], float (&dv)[D / 2],
                                          const bf16* k_tile, const bf16* v_tile, int key_row0,
                                          const bf16* qt, const bf16* dot, const float* lse,
                                          const float* delta, const Problem& p, int lane,
                                          Visible visible, bf16* ds_tile = nullptr,
                                          bool all_visible = false,
                                          WhileMmasRun while_mmas_run = {}) {
  static_assert(kQ == 64 || kQ == 128);
  float st[kQ / 2] = {}, dpt[kQ / 2] = {};
  wgmma::hold(st);
  wgmma::hold(dpt);
  wgmma::fence();
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    wgmma::mma<0, kQ>(st, k_major<kKeyRows>(k_tile, key_row0, ks * 16),
                      k_major<kQ>(qt, 0, ks * 16));
    wgmma::mma<0, kQ>(dpt, k_major<kKeyRows>(v_tile, key_row0, ks * 16),
                      k_major<kQ>(dot, 0, ks * 16));
  }
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::hold(st);
  wgmma::hold(dpt);

  auto probabilities = [&](auto seen) {
#pragma unroll
    for (int i = 0; i < kQ / 2; ++i) {
      const int col = 8 * (i / 4) + 2 * (lane % 4) + (i & 1);
      const float prob =
          seen(col, (i % 4) / 2) ? fast_exp2(fmaf(st[i], p.scale_log2, -lse[col] * kLog2e)) : 0.f;
      st[i] = prob;
      dpt[i] = prob * (dpt[i] - delta[col]);
    }
  };
  if (all_visible)
    probabilities([](int, int) { return true; });
  else
    probabilities(visible);
  uint32_t pa[kQ / 16][4], dsa[kQ / 16][4];
#pragma unroll
  for (int ks = 0; ks < kQ / 16; ++ks) wgmma::accumulator_to_a(pa[ks], st, ks);
  // dV's MMAs first (the query tiles as MN-major [queries][D] operands): the tensor cores run
  // them while dS^T is converted and stored.
  wgmma::fence();
  wgmma::issue_registers_times_tile<D, kQ, kQ / 16>(dv, pa, dot);
#pragma unroll
  for (int ks = 0; ks < kQ / 16; ++ks) wgmma::accumulator_to_a(dsa[ks], dpt, ks);
  if (ds_tile != nullptr) {
    // A fragment register j: key row0 + 8 (j % 2), queries 16 ks + 8 (j / 2) + 2 (lane % 4) + 0, 1.
    // key_row0 is a multiple of 8: its rows start key_row0 lines into every panel.
    const int row0 = threadIdx.x % 128 / 32 * 16 + lane / 4;
    bf16* rows = ds_tile + key_row0 * 64;
#pragma unroll
    for (int ks = 0; ks < kQ / 16; ++ks)
#pragma unroll
      for (int j = 0; j < 4; ++j)
        *reinterpret_cast<uint32_t*>(
            rows + tile_offset<kKeyRows>(row0 + 8 * (j % 2),
                                         16 * ks + 8 * (j / 2) + 2 * (lane % 4))) = dsa[ks][j];
  }
  wgmma::fence();
  wgmma::issue_registers_times_tile<D, kQ, kQ / 16>(dk, dsa, qt);
  wgmma::commit();
  while_mmas_run();
  wgmma::wait<0>();
  wgmma::hold(dv);
  wgmma::hold(dk);
#pragma unroll
  for (int ks = 0; ks < kQ / 16; ++ks) {
    wgmma::hold(pa[ks]);
    wgmma::hold(dsa[ks]);
  }
}

// Adds the m64 x N accumulator x of a warpgroup (columns col0 .. col0 + N of D) into f32 query
// sums (query_sums_offset) with atomics: tile row `row` to sums row row_index(row), nowhere if
// that is -1. Rows count over the CTA, 16 per warp: warpgroup g's accumulator rows are tile rows
// 64 g .. 64 g + 63, so a two-warpgroup caller's row_index reads row % 64.
template <int D, int N = D, class RowIndex>
__device__ __forceinline__ void add_query_sums(float* sums, const float (&x)[N / 2],
                                               RowIndex row_index, const Divisor& G, int lane,
                                               int col0 = 0) {
  static_assert(N % 8 == 0 && N <= D);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_index(threadIdx.x / 32 * 16 + lane / 4 + 8 * r);
    if (row < 0) continue;
    // Columns col0 + 8c + 2 (lane % 4) + (0, 1): chunk col0 / 8 + c, G * 8 floats apart.
    float* base = sums + query_sums_offset(row, col0 + 2 * (lane % 4), G, D);
#pragma unroll
    for (int c = 0; c < N / 8; ++c)
      atomicAdd(reinterpret_cast<float2*>(base + c * G.value * 8),
                make_float2(x[4 * c + 2 * r], x[4 * c + 2 * r + 1]));
  }
}

// dQ = dS K for the 64 query rows query0 .. query0 + 63 (a multiple of 64) of a tile, columns
// col0 .. col0 + N (a multiple of 64) of D, by one warpgroup into the m64 x N accumulator dq
// (zeroed by the caller): dS^T in ds_tile ([kKeys keys][queries] as dkdv_tile writes it, read as
// a transposed A operand), the keys in rows 0 .. kKeys of k_tile ([kKeyRows][D]). The caller
// fences dS^T for the async proxy and meets its writers first.
template <int kKeys, int kKeyRows, int N>
__device__ __forceinline__ void dq_product(float (&dq)[N / 2], const bf16* ds_tile,
                                           const bf16* k_tile, int col0, int query0 = 0) {
  static_assert(kKeys % 16 == 0 && kKeys <= kKeyRows && (N == 64 || N == 128));
  wgmma::hold(dq);
  wgmma::fence();
#pragma unroll
  for (int ks = 0; ks < kKeys / 16; ++ks)
    wgmma::mma<1, N, 1>(dq, mn_major<kKeys>(ds_tile, ks * 16, query0),
                        mn_major<kKeyRows>(k_tile, ks * 16, col0));
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::hold(dq);
}

// dq_product added into dq_acc (f32 query sums, unscaled): dq_row(row) is tile row `row`'s (b T +
// token) Hq + head, -1 for padding (`row` counts as in add_query_sums). Other CTAs add into the
// same rows, hence the atomics.
template <int D, int kKeys, int kKeyRows, int N = D, class DqRow>
__device__ __forceinline__ void add_dq(float* dq_acc, const bf16* ds_tile, const bf16* k_tile,
                                       DqRow dq_row, const Divisor& G, int lane, int col0 = 0) {
  static_assert(D % N == 0);
  float dq[N / 2] = {};
  dq_product<kKeys, kKeyRows, N>(dq, ds_tile, k_tile, col0);
  add_query_sums<D, N>(dq_acc, dq, dq_row, G, lane, col0);
}

// The thread's two keys' dK (scaled) and dV, from m64 x D accumulators.
template <int D>
__device__ __forceinline__ void store_dkdv(const KvArgs& a, const Problem& p, int b, int kvh,
                                           const int (&key)[2], int lane, bool chunked,
                                           const float (&dk)[D / 2], const float (&dv)[D / 2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (key[r] >= p.T) continue;
#pragma unroll
    for (int c = 0; c < D / 8; ++c) {
      const int i = 4 * c + 2 * r;
      store_key_gradients<D>(a, p, b, key[r], kvh, 8 * c + 2 * (lane % 4), chunked, dk[i] * p.scale,
                             dk[i + 1] * p.scale, dv[i], dv[i + 1]);
    }
  }
}
#endif

// Host: sets the kernel's dynamic shared memory limit and launches it on `stream` with `params`.
template <class Kernel, class... Params>
void launch_kernel(Kernel kernel, dim3 grid, int threads, size_t smem, cudaStream_t stream,
                   const Params&... params) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<grid, threads, smem, stream>>>(params...);
  CUDA_CHECK_LAUNCH();
}

// The same for the common kernel parameters (args, p).
template <class Kernel, class Args>
void launch(Kernel kernel, dim3 grid, size_t smem, cudaStream_t stream, const Args& args,
            const Problem& p, int threads = kThreads) {
  launch_kernel(kernel, grid, threads, smem, stream, args, p);
}

}  // namespace infllm::attention::cuda::sm90
