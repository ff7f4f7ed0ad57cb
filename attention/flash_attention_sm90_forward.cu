// The dense causal forward on Hopper as a warp-specialized pipeline (the default;
// INFLLM_ATTENTION_FWD=rows runs the row pass, flash_attention_sm90.h): 64 query rows of one head
// per consumer warpgroup, the same 128-key tiles and the same tile math as the row pass
// (flash_attention_sm90_rows.cuh: mask_tile, store_rows, the online softmax's operations in the
// same order: O and lse are what dense_rows_kernel<D, false> computes, step for step: a tile past
// a row's last key, which a 192-row CTA walks for its first rows, adds exact zeros), scheduled
// by the pipeline of flash_attention_sm90_pipeline.cuh (a producer warpgroup filling a K/V ring,
// consumer warpgroups taking turns at the tensor cores). Within a warpgroup, turn j issues
// S_j = Q K_j^T (the walk's first product) and O += P_{j-1} V_{j-1} (its second) together, waits
// for S_j alone and computes the softmax of S_j while P V still runs; O is rescaled only after
// P V has landed. Registers: O (D/2), S (64) and the P A fragments (32) in flight at once, as the
// row pass holds them one after the other.
#include <cuda_runtime.h>

#include "attention/flash_attention_sm90.h"
#include "attention/flash_attention_sm90_pipeline.cuh"
#include "attention/flash_attention_sm90_rows.cuh"
#include "attention/flash_attention_sm90_tiles.cuh"

namespace infllm::attention::cuda::sm90 {
namespace {

constexpr int kPipelineKeys = 128;  // keys per K/V tile, as the row pass

// Stages of the K/V ring: three at D = 128 (227 KB of shared memory allow no fourth: Q 32 KB +
// 3 x 64 KB), four at D = 64. Two warpgroups are half a step apart, so a stage stays busy for
// 1.5 steps; the third stage gives the producer a full step of slack to refill it.
template <int D>
constexpr int pipeline_stages() {
  return D == 128 ? 3 : 4;
}

// Consumer warpgroups per CTA: three at D = 64 (192 query rows: every K/V tile in shared memory
// serves half as many rows again, and while one warpgroup's MMAs run two others work on their
// softmax, whose exponentials bound the forward where D is small), two at D = 128, whose O and
// S need more than the 160 registers a thread of three groups gets.
template <int D>
constexpr int forward_groups() {
  return D == 64 ? 3 : 2;
}
template <int D>
using ForwardSplit = PipelineSplit<forward_groups<D>()>;

template <int D>
constexpr size_t forward_smem() {
  return pipeline_smem<D, kPipelineKeys, pipeline_stages<D>(), 1, ForwardSplit<D>::kRows>();
}
static_assert(forward_smem<128>() <= 227 * 1024 && forward_smem<64>() <= 227 * 1024);

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The kernels' body. CTAs and threads: PipelineCta with forward_groups<D>() consumer warpgroups.
// Shared memory: Q [kCtaRows][D], then the ring (KvRing, loaded by the TMA from `maps` when kTma).
template <int D, bool kTma, int kFmaExpEvery>
__device__ __forceinline__ void forward_pipeline(const RowsArgs& a, const Problem& p,
                                                 const KvMaps* maps) {
  constexpr int kKeys = kPipelineKeys, kGroups = forward_groups<D>();
  constexpr int kCtaRows = ForwardSplit<D>::kRows;
  extern __shared__ unsigned char smem_raw[];
  bf16* q_tile = aligned_smem(smem_raw);  // [kCtaRows][D]
  const KvRing<D, kKeys, pipeline_stages<D>(), kTma, kGroups> ring(q_tile + kCtaRows * D);

  // Every warpgroup walks all the CTA's tiles (those past its own rows' keys add zeros).
  const PipelineCta<kKeys, kCtaRows> cta(p);
  const int group = warpgroup_index(), lane = threadIdx.x % 32;  // group kGroups: the producer
  if (!ring.start(group, a, p, cta.b, cta.kvh, cta.n_tiles, maps)) return;  // producer: done
  const int group_row0 = group * 64;                                        // rows within the CTA
  int token[2];  // the thread's rows: accumulator registers 4c + 2r + (0, 1) are row r
  const int warp_first = cta.rows(group_row0, lane, token);
  float row_max[2], row_sum[2], correction[2];
  const uint64_t all_rows[2] = {};  // mask_tile's tile-list masks, unused by the dense walk
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.f;
  }
  copy_group_rows<D, kCtaRows>(q_tile, a.q, cta.b, cta.h, p.q_heads, cta.row0, p.T, group_row0);
  group_rows_landed(group);
  const Turns<kGroups> turns(group);

  float acc[D / 2] = {};            // unnormalized O, m64 x D
  float s[kKeys / 2];               // S_j = Q K_j^T, then P_j, m64 x 128
  uint32_t pa[kKeys / 16][4] = {};  // P_{j-1} as A fragments of O += P V
  float unused_dp[1];               // issue_tile_scores' dP, forward: none
  auto hold_values = [&] {
    wgmma::hold(acc);
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::hold(pa[ks]);
  };
  pingpong_walk(
      ring, turns, cta.n_tiles, 0, lane,
      [&](int t) {  // turn t reads K_t and V_{t-1}
        if (t < cta.n_tiles) ring.wait_k(t);
        if (t > 0) ring.wait_v(t - 1);
      },
      // Zeroes S and pins every register the turn's MMAs read or write before wgmma.fence (so
      // that neither the zeros nor the last rescale of O sink below it).
      [&](bool scores) {
        if (scores) {
#pragma unroll
          for (int i = 0; i < kKeys / 2; ++i) s[i] = 0.f;
        }
        wgmma::hold(s);
        hold_values();
        wgmma::fence();
      },
      [&](int j) {
        issue_tile_scores<D, kKeys, false, kCtaRows>(s, unused_dp, q_tile, nullptr, group_row0,
                                                     ring.k_tile(j), nullptr);
      },
      [&](int j) {  // O += P_j V_j, V as an MN-major [keys][D] operand
        wgmma::issue_registers_times_tile<D, kKeys>(acc, pa, ring.v_tile(j));
      },
      [&](int j) {  // softmax of S_j up to the rescale of O
        wgmma::hold(s);
        const bool diagonal = j * kKeys + kKeys - 1 > warp_first;
        mask_tile<kKeys, 2, false>(
            s, [](int tile, int half) { return 2 * tile + half; }, j, diagonal, token, all_rows,
            lane);
        tile_probabilities<kKeys, false, kFmaExpEvery>(s, row_max, row_sum, correction,
                                                       p.scale_log2);
      },
      hold_values,
      [&](int) {
        rescale_rows<D>(acc, correction);
#pragma unroll
        for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::accumulator_to_a(pa[ks], s, ks);
      });
  store_rows<D, false, false>(a, p, cta.b, cta.h, token, acc, row_max, row_sum, lane);
}
#endif

// The K/V ring copied with cp.async by the producer warpgroup (INFLLM_ATTENTION_COPY=cp_async).
// kFmaExpEvery: tile_probabilities' share of exponentials on the FMA pipe
// (dense_forward_fma_exp_every).
template <int D, int kFmaExpEvery>
__global__ void __launch_bounds__(ForwardSplit<D>::kThreads, 1)
    pipelined_forward_kernel(RowsArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  forward_pipeline<D, false, kFmaExpEvery>(a, p, nullptr);
#endif
}

// The K/V ring loaded by the TMA (the default): maps of 64-column x kPipelineKeys boxes.
template <int D, int kFmaExpEvery>
__global__ void __launch_bounds__(ForwardSplit<D>::kThreads, 1)
    pipelined_forward_tma_kernel(RowsArgs a, Problem p, const __grid_constant__ KvMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  forward_pipeline<D, true, kFmaExpEvery>(a, p, &maps);
#endif
}

// f(std::integral_constant<int, n>) for n = fma_exp_every (0, 2, 4 or 8).
template <class F>
void with_fma_exp_every(int fma_exp_every, F&& f) {
  switch (fma_exp_every) {
    case 0:
      return f(std::integral_constant<int, 0>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 4:
      return f(std::integral_constant<int, 4>{});
    default:
      return f(std::integral_constant<int, 8>{});
  }
}

}  // namespace

void pipelined_forward(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream, bool tma,
                       int fma_exp_every) {
  with_head_dim(D, [&](auto d) {
    with_fma_exp_every(fma_exp_every, [&](auto every) {
      constexpr int kD = decltype(d)::value, kEvery = decltype(every)::value;
      constexpr int kGroups = forward_groups<kD>();
      if (tma)
        launch_row_pipeline<kGroups>(pipelined_forward_tma_kernel<kD, kEvery>, forward_smem<kD>(),
                                     a, p, stream, make_kv_maps(kD, kPipelineKeys, a.k, a.v, p));
      else
        launch_row_pipeline<kGroups>(pipelined_forward_kernel<kD, kEvery>, forward_smem<kD>(), a, p,
                                     stream);
    });
  });
}

}  // namespace infllm::attention::cuda::sm90
