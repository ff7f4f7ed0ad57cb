// The dense causal forward on Hopper as a warp-specialized pipeline
// (INFLLM_ATTENTION_FWD=pipelined, flash_attention_sm90.h): the same 128 query rows of one head per
// CTA, the same 128-key tiles and the same tile math as the row pass
// (flash_attention_sm90_rows.cuh: mask_tile, store_rows, the online softmax's operations in the
// same order: O and lse are what dense_rows_kernel<D, false> computes, step for step), scheduled
// differently:
//  * a producer warpgroup (warps 8-11) only copies K and V tiles, with cp.async, into a ring of
//    kStages stages. Each stage has three mbarriers: k_full and v_full complete when the
//    producer's copies of the tile's K (V) have landed (cp.async.mbarrier.arrive, one arrival per
//    producer thread), empty when all 8 consumer warps have finished the MMAs that read the stage.
//    No __syncthreads after the start: a warpgroup waits only for the data it needs. The producer
//    gives registers to the consumers (setmaxnreg): 384 threads start with 168 each, the producer
//    drops to kProducerRegisters, the consumers rise to kConsumerRegisters.
//  * two consumer warpgroups (warps 0-3, 4-7) of 64 rows each take turns at the tensor cores
//    (pingpong): named barrier kTurnBarrier + g is warpgroup g's turn. A turn issues the MMAs of
//    one step and hands the turn over at once, so one warpgroup's softmax runs while the other's
//    MMAs do and the tensor cores see a steady stream.
//  * within a warpgroup, step j issues S_j = Q K_j^T and O += P_{j-1} V_{j-1} together, waits for
//    S_j alone (wgmma.wait_group 1) and computes the softmax of S_j while P V still runs; O is
//    rescaled only after P V has landed. Registers: O (D/2), S (64) and the P A fragments (32) in
//    flight at once, as the row pass holds them one after the other.
#include <cuda_runtime.h>

#include "attention/flash_attention_sm90.h"
#include "attention/flash_attention_sm90_pipeline.cuh"
#include "attention/flash_attention_sm90_rows.cuh"
#include "attention/flash_attention_sm90_tiles.cuh"

namespace infllm::attention::cuda::sm90 {
namespace {

constexpr int kConsumerThreads = kThreads;  // two warpgroups of 64 query rows
constexpr int kPipelineThreads = kConsumerThreads + kProducerThreads;
// 65536 registers per SM: 384 x 168 at launch = 128 x 40 + 256 x 232 after setmaxnreg.
constexpr int kProducerRegisters = 40, kConsumerRegisters = 232;
static_assert(kProducerThreads * kProducerRegisters + kConsumerThreads * kConsumerRegisters <=
              kPipelineThreads * 168);
constexpr int kPipelineKeys = 128;  // keys per K/V tile, as the row pass

// Stages of the K/V ring: three at D = 128 (227 KB of shared memory allow no fourth), four at
// D = 64. The two warpgroups are half a step apart, so a stage stays busy for 1.5 steps; the
// third stage gives the producer a full step of slack to refill it.
template <int D>
constexpr int pipeline_stages() {
  return D == 128 ? 3 : 4;
}

template <int D>
constexpr size_t pipeline_smem() {
  return 1024 + size_t(kRows) * D * 2 +                                       // Q
         size_t(pipeline_stages<D>()) * (size_t(2) * kPipelineKeys * D * 2 +  // K, V
                                         3 * sizeof(uint64_t));               // k/v_full, empty
}
static_assert(pipeline_smem<128>() <= 227 * 1024 && pipeline_smem<64>() <= 227 * 1024);

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Used only by the sm_90a kernel body (the portable PTX pass compiles it empty).
constexpr int kConsumerWarps = kConsumerThreads / 32;  // arrivals that free a stage
constexpr int kTurnBarrier = 2;   // named barriers 2, 3: the warpgroups' turns (256 threads)
constexpr int kQueryBarrier = 4;  // named barriers 4, 5: a warpgroup's Q rows landed (128)

__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// online_softmax without the rescale of O: turns s into P, rescales the running sum and returns
// the factor O must be rescaled by (rescale_rows) once the P V that is still running has landed.
// The operations and their order are online_softmax's (dense rows: kTileList = false).
template <int kKeys>
__device__ __forceinline__ void tile_probabilities(float (&s)[kKeys / 2], float (&row_max)[2],
                                                   float (&row_sum)[2], float (&correction)[2],
                                                   float scale_log2) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < kKeys / 8; ++c)
      mx = fmaxf(mx, fmaxf(s[4 * c + 2 * r], s[4 * c + 2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // Every dense row sees key 0 in the first tile: the maximum is finite from then on.
    const float new_max = fmaxf(row_max[r], mx * scale_log2);
    correction[r] = fast_exp2(row_max[r] - new_max);
    row_max[r] = new_max;
    row_sum[r] *= correction[r];
#pragma unroll
    for (int c = 0; c < kKeys / 8; ++c)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& x = s[4 * c + 2 * r + e];
        x = fast_exp2(fmaf(x, scale_log2, -new_max));
        row_sum[r] += x;
      }
  }
}

template <int D>
__device__ __forceinline__ void rescale_rows(float (&acc)[D / 2], const float (&correction)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int c = 0; c < D / 8; ++c) {
      acc[4 * c + 2 * r] *= correction[r];
      acc[4 * c + 2 * r + 1] *= correction[r];
    }
}
#endif

// Grid as the row pass: (T / 128 tiles, longest first; B * Hq). Threads 0 .. 255 are the consumer
// warpgroups, 256 .. 383 the producer. Shared memory: Q [128][D], kStages x (K, V)
// [128][D], then the mbarriers k_full, v_full, empty [kStages] each.
template <int D>
__global__ void __launch_bounds__(kPipelineThreads, 1)
    pipelined_forward_kernel(RowsArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kKeys = kPipelineKeys, kStages = pipeline_stages<D>();
  extern __shared__ unsigned char smem_raw[];
  bf16* q_tile = aligned_smem(smem_raw);  // [128][D]
  bf16* stages = q_tile + kRows * D;      // kStages x (K, V) [128][D]
  auto k_tile = [&](int stage) { return stages + stage * 2 * kKeys * D; };
  auto v_tile = [&](int stage) { return k_tile(stage) + kKeys * D; };
  uint64_t* k_full = reinterpret_cast<uint64_t*>(stages + kStages * 2 * kKeys * D);
  uint64_t* v_full = k_full + kStages;
  uint64_t* empty = v_full + kStages;

  const int b = blockIdx.y / p.Hq, h = blockIdx.y % p.Hq, kvh = h / p.G;
  const int row0 = (gridDim.x - 1 - blockIdx.x) * kRows;  // longest rows first
  // Tiles 0 .. the one holding the CTA's last row (both warpgroups walk all of them: the last
  // tile starts at row0, before every row of the CTA).
  const int n_tiles = (min(p.T, row0 + kRows) - 1) / kKeys + 1;
  const int group = warpgroup_index(), lane = threadIdx.x % 32;  // group 2: the producer

  if (threadIdx.x < kStages) {
    mma::mbarrier_init(&k_full[threadIdx.x], kProducerThreads);  // one arrival per thread
    mma::mbarrier_init(&v_full[threadIdx.x], kProducerThreads);
    mma::mbarrier_init(&empty[threadIdx.x], kConsumerWarps);
  }
  __syncthreads();

  // Tile j goes to stage j % kStages, whose barriers then run their phase j / kStages: the
  // consumers wait for full parity (j / kStages) & 1, the producer for the release of tile
  // j - kStages (empty parity (j / kStages - 1) & 1). A stage's phases cannot run two ahead of a
  // waiter: tile j + kStages is copied only after both warpgroups released tile j.
  if (group == 2) {
    release_registers<kProducerRegisters>();
    const int thread = threadIdx.x - kConsumerThreads;
    for (int j = 0; j < n_tiles; ++j) {
      const int stage = j % kStages, key0 = j * kKeys;
      if (j >= kStages) mma::mbarrier_wait(&empty[stage], (j / kStages - 1) & 1);
      copy_rows<D, kKeys, kProducerThreads, kKeys>(k_tile(stage), a.k, b, kvh, p.kv_heads, key0,
                                                   p.T, 0, thread);
      mma::cp_async_arrive(&k_full[stage]);
      copy_rows<D, kKeys, kProducerThreads, kKeys>(v_tile(stage), a.v, b, kvh, p.kv_heads, key0,
                                                   p.T, 0, thread);
      mma::cp_async_arrive(&v_full[stage]);
    }
    return;  // the copies still in flight complete their barriers by themselves
  }
  claim_registers<kConsumerRegisters>();

  const int warp = threadIdx.x % 128 / 32, group_row0 = group * 64;  // rows within the CTA
  const int warp_first = row0 + group_row0 + warp * 16;              // first token of the warp
  int token[2];  // the thread's rows: accumulator registers 4c + 2r + (0, 1) are row r
  float row_max[2], row_sum[2], correction[2];
  const uint64_t all_rows[2] = {};  // mask_tile's tile-list masks, unused by the dense walk
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    token[r] = warp_first + lane / 4 + 8 * r;
    row_max[r] = -INFINITY;
    row_sum[r] = 0.f;
  }
  // Each warpgroup copies its own 64 Q rows (the producer starts on K at once).
  copy_rows<D, kRows, 128, 64>(q_tile, a.q, b, h, p.q_heads, row0 + group_row0, p.T, group_row0,
                               threadIdx.x % 128);
  cp_async_commit();
  cp_async_wait<0>();
  wgmma::fence_async_proxy();
  named_barrier_sync(kQueryBarrier + group, 128);

  // The turns (file comment): warpgroup g takes its turn at barrier kTurnBarrier + g, which
  // completes once the other warpgroup has handed it over (bar.arrive, 256 = both groups). Each
  // warpgroup takes n_tiles + 1 turns (S_0; S_j with P_{j-1} V_{j-1}; P_{n-1} V_{n-1}) and hands
  // over after each, except warpgroup 1 after its last; warpgroup 1 hands warpgroup 0 its first
  // turn. So every barrier sees as many arrivals as syncs, the turns alternate 0, 1, 0, 1, ..., and
  // no bar.arrive can run a barrier's count past one generation.
  const int my_turn = kTurnBarrier + group, other_turn = kTurnBarrier + 1 - group;
  auto take_turn = [&] { named_barrier_sync(my_turn, kConsumerThreads); };
  auto hand_over = [&] { named_barrier_arrive(other_turn, kConsumerThreads); };
  if (group == 1) hand_over();

  float acc[D / 2] = {};            // unnormalized O, m64 x D
  float s[kKeys / 2];               // S_j = Q K_j^T, then P_j, m64 x 128
  uint32_t pa[kKeys / 16][4] = {};  // P_{j-1} as A fragments of O += P V
  // Waits for tile j's K (V) copies and orders them before this thread's tensor-core reads;
  // the turn's bar.sync then covers all 128 threads of the warpgroup.
  auto wait_full = [&](uint64_t* full, int j) {
    mma::mbarrier_wait(&full[j % kStages], (j / kStages) & 1);
  };
  auto issue_scores = [&](int j) {
    const bf16* kt = k_tile(j % kStages);
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks)
      wgmma::mma<0, kKeys>(s, k_major<kRows>(q_tile, group_row0, ks * 16),
                           k_major<kKeys>(kt, 0, ks * 16));
  };
  auto issue_values = [&](int j) {  // O += P_j V_j, V as an MN-major [keys][D] operand
    const bf16* vt = v_tile(j % kStages);
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks)
      wgmma::mma<1, D>(acc, pa[ks], mn_major<kKeys>(vt, ks * 16, 0));
  };
  // Zeroes S and pins every register the turn's MMAs read or write before wgmma.fence (so that
  // neither the zeros nor the last rescale of O sink below it).
  auto start_turn = [&](bool scores) {
    if (scores) {
#pragma unroll
      for (int i = 0; i < kKeys / 2; ++i) s[i] = 0.f;
    }
    wgmma::hold(s);
    wgmma::hold(acc);
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::hold(pa[ks]);
    wgmma::fence();
  };
  // Softmax of S_j (in s) up to the rescale of O.
  auto probabilities = [&](int j) {
    const bool diagonal = j * kKeys + kKeys - 1 > warp_first;
    mask_tile<kKeys, 2, false>(
        s, [](int tile, int half) { return 2 * tile + half; }, j, diagonal, token, all_rows, lane);
    tile_probabilities<kKeys>(s, row_max, row_sum, correction, p.scale_log2);
  };
  auto to_a_fragments = [&] {
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::accumulator_to_a(pa[ks], s, ks);
  };
  // This warp's MMAs that read tile j's stage have completed (wgmma.wait_group before).
  auto release = [&](int j) {
    __syncwarp();
    if (lane == 0) mma::mbarrier_arrive(&empty[j % kStages]);
  };

  // Turn 0: S_0 alone.
  wait_full(k_full, 0);
  wgmma::fence_async_proxy();
  take_turn();
  start_turn(true);
  issue_scores(0);
  wgmma::commit();
  hand_over();
  wgmma::wait<0>();
  wgmma::hold(s);
  probabilities(0);
  rescale_rows<D>(acc, correction);
  to_a_fragments();

  // Turns 1 .. n - 1: S_j and P_{j-1} V_{j-1}; the softmax of S_j overlaps P V.
  for (int j = 1; j < n_tiles; ++j) {
    wait_full(k_full, j);
    wait_full(v_full, j - 1);
    wgmma::fence_async_proxy();
    take_turn();
    start_turn(true);
    issue_scores(j);
    wgmma::commit();
    issue_values(j - 1);
    wgmma::commit();
    hand_over();
    wgmma::wait<1>();  // S_j (the older group) has landed; P V may still run
    wgmma::hold(s);
    probabilities(j);
    wgmma::wait<0>();
    wgmma::hold(acc);
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::hold(pa[ks]);
    release(j - 1);  // K_{j-1} (read by S_{j-1}, waited for last turn) and V_{j-1}
    rescale_rows<D>(acc, correction);
    to_a_fragments();
  }

  // Turn n: P_{n-1} V_{n-1}. Warpgroup 1 hands over no more (warpgroup 0 has taken its last).
  wait_full(v_full, n_tiles - 1);
  wgmma::fence_async_proxy();
  take_turn();
  start_turn(false);
  issue_values(n_tiles - 1);
  wgmma::commit();
  if (group == 0) hand_over();
  wgmma::wait<0>();
  wgmma::hold(acc);
#pragma unroll
  for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::hold(pa[ks]);
  release(n_tiles - 1);
  store_rows<D, false, false>(a, p, b, h, token, acc, row_max, row_sum, lane);
#endif
}

}  // namespace

void pipelined_forward(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream) {
  const dim3 grid((p.T + kRows - 1) / kRows, p.B * p.Hq);
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    launch(pipelined_forward_kernel<kD>, grid, pipeline_smem<kD>(), stream, a, p, kPipelineThreads);
  });
}

}  // namespace infllm::attention::cuda::sm90
