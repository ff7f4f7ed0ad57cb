// The dense dQ pass on Hopper as a warp-specialized pipeline (the default; INFLLM_ATTENTION_DQ=
// separate runs the row pass, flash_attention_sm90.h): the same 128 query rows of one head per CTA,
// the same 64-key tiles and the same tile math as the row pass (flash_attention_sm90_rows.cuh:
// issue_tile_scores, dense_tile_ds, store_rows; dQ += dS_j K_j in the order j = 0, 1, ...: dQ is
// what dense_rows_kernel<D, true> computes, step for step), scheduled by the pipeline of
// flash_attention_sm90_pipeline.cuh (a producer warpgroup filling a K/V ring, two consumer
// warpgroups taking turns at the tensor cores), as the pipelined forward.
// Within a warpgroup, turn j issues S_j = Q K_j^T with dP_j = dO V_j^T (the walk's first product:
// one commit group) and dQ += dS_{j-1} K_{j-1} (its second), waits for S_j and dP_j alone and
// computes dS_j = P_j (dP_j - delta) while the dQ MMAs still run; dS_j becomes A fragments once
// they have landed. Registers in flight: dQ (D/2), S and dP (32 each), dS's A fragments (16).
// A stage holds the tile's K and V: S reads K, dP reads V, dQ reads K again one turn later, so
// the walk releases tile j - 1's stage after dQ += dS_{j-1} K_{j-1} has landed.
#include <cuda_runtime.h>

#include "attention/flash_attention_sm90.h"
#include "attention/flash_attention_sm90_pipeline.cuh"
#include "attention/flash_attention_sm90_rows.cuh"
#include "attention/flash_attention_sm90_tiles.cuh"

namespace infllm::attention::cuda::sm90 {
namespace {

constexpr int kDqKeys = rows_keys<true>();  // 64: S, dP and dQ live in registers at once

// Stages of the K/V ring (227 KB of shared memory per CTA; Q and dO [128][D] stay resident):
//   D = 128: Q + dO 64 KB, a stage (K, V [64][128]) 32 KB: 5 stages = 160 KB, 225 KB in all with
//            the alignment pad and barriers; a sixth would need 257 KB.
//   D = 64:  Q + dO 32 KB, a stage 16 KB: 8 stages = 128 KB, 161 KB in all (up to 12 would fit).
// A 64-key step is half a forward step and the two warpgroups are half a step apart, so a stage
// stays busy for about 1.5 steps plus the turn that reads K again for dQ; the other stages let the
// producer run 3 (D = 128) or 6 (D = 64) tiles ahead through the latency of the copies. One CTA
// per SM either way (384 threads x 168 registers), so more stages cost nothing at D = 64 but the
// producer's head start buys little beyond 8.
template <int D>
constexpr int dq_stages() {
  return D == 128 ? 5 : 8;
}

template <int D>
constexpr size_t dq_smem() {
  return pipeline_smem<D, kDqKeys, dq_stages<D>(), 2>();
}
static_assert(dq_smem<128>() <= 227 * 1024 && dq_smem<64>() <= 227 * 1024);
static_assert(pipeline_smem<128, kDqKeys, dq_stages<128>() + 1, 2>() > 227 * 1024);

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The kernels' body. CTAs and threads: PipelineCta. Shared memory: Q [128][D], dO [128][D], then
// the ring (KvRing, loaded by the TMA from `maps` when kTma).
template <int D, bool kTma>
__device__ __forceinline__ void dq_pipeline(const RowsArgs& a, const Problem& p,
                                            const KvMaps* maps) {
  constexpr int kKeys = kDqKeys;
  extern __shared__ unsigned char smem_raw[];
  bf16* q_tile = aligned_smem(smem_raw);  // [128][D]
  bf16* do_tile = q_tile + kRows * D;     // [128][D]
  const KvRing<D, kKeys, dq_stages<D>(), kTma> ring(do_tile + kRows * D);

  const PipelineCta<kKeys> cta(p);  // the producer copies all the CTA's tiles
  const int group = warpgroup_index(), lane = threadIdx.x % 32;             // group 2: the producer
  if (!ring.start(group, a, p, cta.b, cta.kvh, cta.n_tiles, maps)) return;  // producer: done
  const int group_row0 = group * 64;                                        // rows within the CTA
  int token[2];  // the thread's rows: accumulator registers 4c + 2r + (0, 1) are row r
  const int warp_first = cta.rows(group_row0, lane, token);
  // The warpgroup's tiles start at or before its last row (the row pass skips the others):
  // warpgroup 0 stops one tile short of the CTA's last when that tile starts at row0 + 64; it
  // then takes one empty turn, so both warpgroups take n_tiles + 1 turns (Turns).
  const int n_mine = min(cta.n_tiles, (cta.row0 + group_row0) / kKeys + 1);
  float row_lse2[2], row_delta[2];
  backward_row_stats(a, p, cta.b, cta.h, token, row_lse2, row_delta);
  copy_group_rows<D>(q_tile, a.q, cta.b, cta.h, p.q_heads, cta.row0, p.T, group_row0);
  copy_group_rows<D>(do_tile, a.dout, cta.b, cta.h, p.o_heads, cta.row0, p.T, group_row0);
  group_rows_landed(group);
  const Turns<> turns(group);

  float dq[D / 2] = {};             // dQ (unscaled), m64 x D
  float s[kKeys / 2];               // S_j = Q K_j^T, m64 x 64
  float dp[kKeys / 2];              // dP_j = dO V_j^T, then dS_j
  uint32_t ds[kKeys / 16][4] = {};  // dS_{j-1} as A fragments of dQ += dS K
  auto hold_dq = [&] {
    wgmma::hold(dq);
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::hold(ds[ks]);
  };
  pingpong_walk(
      ring, turns, n_mine, cta.n_tiles - n_mine, lane,
      [&](int t) {  // turn t reads K_t and V_t (and K_{t-1}, waited for last turn)
        if (t < n_mine) {
          ring.wait_k(t);
          ring.wait_v(t);
        }
      },
      // Zeroes S and dP and pins every register the turn's MMAs read or write before wgmma.fence.
      [&](bool scores) {
        if (scores) {
#pragma unroll
          for (int i = 0; i < kKeys / 2; ++i) s[i] = dp[i] = 0.f;
        }
        wgmma::hold(s);
        wgmma::hold(dp);
        hold_dq();
        wgmma::fence();
      },
      [&](int j) {
        issue_tile_scores<D, kKeys, true>(s, dp, q_tile, do_tile, group_row0, ring.k_tile(j),
                                          ring.v_tile(j));
      },
      [&](int j) {  // dQ += dS_j K_j, K as an MN-major [keys][D] operand
        wgmma::issue_registers_times_tile<D, kKeys>(dq, ds, ring.k_tile(j));
      },
      [&](int j) {  // dS_j, in dp
        wgmma::hold(s);
        wgmma::hold(dp);
        const bool diagonal = j * kKeys + kKeys - 1 > warp_first;
        dense_tile_ds<kKeys>(s, dp, j, diagonal, token, row_lse2, row_delta, p.scale_log2, lane);
      },
      hold_dq,
      [&](int) {
#pragma unroll
        for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::accumulator_to_a(ds[ks], dp, ks);
      });
  float unused_max[2] = {}, unused_sum[2] = {};  // the forward's row statistics
  store_rows<D, true, false>(a, p, cta.b, cta.h, token, dq, unused_max, unused_sum, lane);
}
#endif

// The K/V ring copied with cp.async by the producer warpgroup (INFLLM_ATTENTION_COPY=cp_async).
template <int D>
__global__ void __launch_bounds__(kPipelineThreads, 1) pipelined_dq_kernel(RowsArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  dq_pipeline<D, false>(a, p, nullptr);
#endif
}

// The K/V ring loaded by the TMA (the default): maps of 64-column x kDqKeys boxes.
template <int D>
__global__ void __launch_bounds__(kPipelineThreads, 1)
    pipelined_dq_tma_kernel(RowsArgs a, Problem p, const __grid_constant__ KvMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  dq_pipeline<D, true>(a, p, &maps);
#endif
}

}  // namespace

void pipelined_dq(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream, bool tma) {
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    if (tma)
      launch_row_pipeline(pipelined_dq_tma_kernel<kD>, dq_smem<kD>(), a, p, stream,
                          make_kv_maps(kD, kDqKeys, a.k, a.v, p));
    else
      launch_row_pipeline(pipelined_dq_kernel<kD>, dq_smem<kD>(), a, p, stream);
  });
}

}  // namespace infllm::attention::cuda::sm90
