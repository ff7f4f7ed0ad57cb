// Portable dense rows kernel (flash_attention_rows.cuh): the forward (O, lse) or the dQ pass of
// dense causal attention with mma.sync, on GPUs without the Hopper kernels.
// Each CTA owns 128 consecutive tokens of one head and walks KV tiles 0 .. its diagonal in order,
// longest rows first; a tile is loaded by all threads into a ring of kStages and consumed by every
// warp between two __syncthreads.
#include <cuda_runtime.h>

#include "attention/flash_attention_passes.h"
#include "attention/flash_attention_rows.cuh"
#include "core/cuda_check.h"
#include "core/error.h"

namespace infllm::attention::cuda::portable {
namespace {

template <int D, bool kBackward>
__global__ void __launch_bounds__(rows_threads<D, false, kBackward>(),
                                  rows_ctas_per_sm<D, false, kBackward>())
    dense_rows_kernel(RowsArgs a, Problem p) {
  constexpr int kM = row_tiles<D, false, kBackward>();  // m16 tiles per warp
  constexpr int kThreads = rows_threads<D, false, kBackward>();
  constexpr int kStages = rows_stages<D, false, kBackward>();
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* kv_stages = reinterpret_cast<bf16*>(smem + query_tiles_bytes<D, false, kBackward>());
  bf16* q_tile = reinterpret_cast<bf16*>(smem);                         // [128][D]
  bf16* do_tile = reinterpret_cast<bf16*>(smem) + kRowsPerCta * D;      // [128][D], backward
  auto k_stage = [&](int s) { return kv_stages + s * 2 * kTile * D; };  // [64][D]
  auto v_stage = [&](int s) { return k_stage(s) + kTile * D; };         // [64][D]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  QueryRows<false> rows;
  rows.b = blockIdx.y / p.Hq;
  rows.head0 = blockIdx.y % p.Hq;
  const int kvh = rows.head0 / p.G;
  rows.token0 = (gridDim.x - 1 - blockIdx.x) * kRowsPerCta;  // longest rows first
  load_query_rows<D, kThreads>(q_tile, a.q, p.q_heads, rows, p);
  if constexpr (kBackward) load_query_rows<D, kThreads>(do_tile, a.dout, p.o_heads, rows, p);
  cp_async_commit();

  // This warp's rows: warp_row0 .. +16*kM-1 of the CTA, consecutive tokens.
  const int warp_row0 = warp * 16 * kM;
  const int warp_first = rows.token0 + warp_row0;
  const int warp_last = warp_first + 16 * kM - 1;
  const bool warp_active = warp_first < p.T;
  int row_token[2 * kM];
  bool row_valid[2 * kM];
  float acc[kM][D / 8][4] = {};               // forward: unnormalized O; backward: dQ
  float row_max[2 * kM], row_sum[2 * kM];     // forward, base-2 units
  float row_lse2[2 * kM], row_delta[2 * kM];  // backward
#pragma unroll
  for (int r = 0; r < 2 * kM; ++r) {
    row_token[r] = rows.token(thread_row(warp_row0, lane, r));
    row_valid[r] = rows.valid(thread_row(warp_row0, lane, r), p);
    row_max[r] = -INFINITY;
    row_sum[r] = 0.f;
    if constexpr (kBackward) {
      const size_t idx =
          (size_t(rows.b) * p.Hq + rows.head(thread_row(warp_row0, lane, r))) * p.T + row_token[r];
      row_lse2[r] = row_valid[r] ? a.lse[idx] * kLog2e : INFINITY;  // padding rows: P = 0
      row_delta[r] = row_valid[r] ? a.delta[idx] : 0.f;
    }
  }

  auto query_fragment = [&](uint32_t(&x)[4], int m, int kk) {
    load_a<D>(x, q_tile, warp_row0 + 16 * m, kk * 16, lane);
  };
  auto no_operand = [&](int) { return static_cast<const uint32_t(*)[4]>(nullptr); };
  auto dout_fragment = [&](uint32_t(&x)[4], int m, int kk) {
    load_a<D>(x, do_tile, warp_row0 + 16 * m, kk * 16, lane);
  };
  // One KV tile for this warp's rows: forward online softmax and O += P V, or backward dQ.
  auto consume = [&](const bf16* k_tile, const bf16* v_tile, int tile) {
    consume_tile<D, kBackward, false, 0>(acc, row_max, row_sum, row_lse2, row_delta, row_token,
                                         query_fragment, no_operand, dout_fragment, k_tile, v_tile,
                                         tile, false, warp_first, lane, p);
  };

  const int n_tiles = (min(p.T, rows.token0 + kRowsPerCta) - 1) / kTile + 1;
  // Tile j goes to stage j % kStages in commit group j + 1 (group 0 holds the query rows).
  auto load_tile = [&](int j) {
    if (j < n_tiles) {
      load_kv_tile<D, kThreads>(k_stage(j % kStages), a.k, rows.b, kvh, j, p, threadIdx.x);
      load_kv_tile<D, kThreads>(v_stage(j % kStages), a.v, rows.b, kvh, j, p, threadIdx.x);
    }
    cp_async_commit();  // possibly empty: keeps one group per tile index
  };
  for (int j = 0; j < kStages - 1; ++j) load_tile(j);
  for (int i = 0; i < n_tiles; ++i) {
    load_tile(i + kStages - 1);    // into the stage that iteration i-1 finished with
    cp_async_wait<kStages - 1>();  // groups 0..i+1 have landed: the query rows and tile i
    __syncthreads();
    if (warp_active && i * kTile <= warp_last)
      consume(k_stage(i % kStages), v_stage(i % kStages), i);
    __syncthreads();  // everyone is done with this stage before it is refilled
  }
  store_rows<D, false, kBackward>(a, p, rows, acc, row_max, row_sum, row_token, row_valid,
                                  warp_row0, lane);
}

template <int D, bool kBackward>
void launch_dense_rows(const char* op, const RowsArgs& a, const Problem& p, cudaStream_t stream) {
  const size_t smem = rows_tiles_smem<D, false, kBackward>();
  check_rows_smem(op, smem);
  auto kernel = dense_rows_kernel<D, kBackward>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid((p.T + kRowsPerCta - 1) / kRowsPerCta, p.B * p.Hq);
  kernel<<<grid, rows_threads<D, false, kBackward>(), smem, stream>>>(a, p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void dense_rows(const char* op, bool backward, int D, const RowsArgs& a, const Problem& p,
                cudaStream_t stream) {
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    if (backward)
      launch_dense_rows<kD, true>(op, a, p, stream);
    else
      launch_dense_rows<kD, false>(op, a, p, stream);
  });
}

}  // namespace infllm::attention::cuda::portable
