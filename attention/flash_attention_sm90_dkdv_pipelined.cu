// The dense dK/dV pass on Hopper as a warp-specialized pipeline (the default;
// INFLLM_ATTENTION_DKDV=rows runs the row kernel, flash_attention_sm90.h): the same CTAs as
// dense_dkdv_kernel<D, false> (flash_attention_sm90_dense.cu: 128 keys of one KV head, 64 per
// consumer warpgroup, 64-query tiles from the diagonal to the end for each head of the CTA's
// share of the group, the same head split), the same one-tile step (dkdv_tile), masks and stores
// (store_dkdv), steps in the same order: dK and dV are what the row-walking kernel computes,
// operation for operation. Scheduled differently:
//  * a producer warpgroup (warps 8-11) only copies the query side of each step (q and dO
//    [64][D], lse and delta [64]) into a ring of kStages stages: q and dO with the TMA, one
//    thread issuing their boxes (the default; flash_attention_sm90_tma.cuh), or with 16-byte
//    cp.async from every producer thread (INFLLM_ATTENTION_COPY=cp_async); lse and delta with
//    4-byte cp.async either way. Each stage has two mbarriers: full completes when the
//    producer's copies have landed (cp.async.mbarrier.arrive.noinc, one arrival per producer
//    thread, plus with the TMA the issuing thread's arrival with the tiles' bytes, expect_tx),
//    empty when all 8 consumer warps have finished the step's MMAs and reads. No __syncthreads
//    after the start: a warpgroup waits only for the tile it needs, and the two warpgroups may
//    drift apart by up to kStages - 1 steps, so one's exponentials and conversions run while the
//    other's MMAs do.
//  * two consumer warpgroups (warps 0-3, 4-7) of 64 keys each copy their own K and V rows once,
//    then run dkdv_tile on every stage in turn; dK and dV stay in registers to the end. The
//    producer gives its registers to them (setmaxnreg): 384 threads start with 168 each, the
//    producer drops to kProducerRegisters, the consumers rise to kConsumerRegisters.
#include <cuda_runtime.h>

#include "attention/flash_attention_sm90.h"
#include "attention/flash_attention_sm90_pipeline.cuh"
#include "attention/flash_attention_sm90_tiles.cuh"

namespace infllm::attention::cuda::sm90 {
namespace {

// Registers: the pipeline header's split (producer 40, consumers 232). The consumers hold dK and
// dV (m64 x D f32 each: D registers) across the walk, and inside dkdv_tile S^T and dP^T (32 each)
// and then their A fragments (16 each): they fit 232 at D = 128 without spills. The producer's
// copy loop (two 64-bit sources, the head and tile counters) spills at 24, the only lower count
// that would give the consumers 240.

// Stages of the query-side ring. Shared memory (227 KB = 232448 bytes per CTA at most): 1024 for
// the swizzle's alignment, K and V of 128 keys (2 x 128 x D x 2 bytes), then per stage q and dO
// (2 x 64 x D x 2 bytes), lse and delta (2 x 64 x 4) and two 8-byte mbarriers:
//   D = 128: 1024 + 65536 + 4 x (32768 + 512 + 16) = 199744 bytes (195 KB); a fifth stage needs
//            233040 > 232448.
//   D = 64:  1024 + 32768 + 8 x (16384 + 512 + 16) = 169088 bytes (165 KB); up to 11 would fit.
// A D = 64 stage carries half the bytes and half the MMA work of a D = 128 one, so 8 stages keep
// about as much copy time in flight ahead of the consumers as 4 do at D = 128. Powers of two:
// the stage and parity of step i are a mask and a shift.
template <int D>
constexpr int dkdv_stages() {
  return D == 128 ? 4 : 8;
}

template <int D>
constexpr size_t dkdv_stage_bytes() {
  return size_t(2) * kDkdvQueries * D * 2 + 2 * kDkdvQueries * 4 + 2 * sizeof(uint64_t);
}

template <int D>
constexpr size_t pipelined_dkdv_smem() {
  return 1024 + size_t(2) * kRows * D * 2 + dkdv_stages<D>() * dkdv_stage_bytes<D>();
}
static_assert(pipelined_dkdv_smem<128>() == 199744 && pipelined_dkdv_smem<64>() == 169088);
static_assert(pipelined_dkdv_smem<128>() + dkdv_stage_bytes<128>() > 227 * 1024);
static_assert(pipelined_dkdv_smem<64>() <= 227 * 1024);

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Used only by the sm_90a kernel bodies (the portable PTX pass compiles them empty).
constexpr int kGroupBarrier = 2;  // named barriers 2, 3: one consumer warpgroup's 128 threads

// The kernels' body. Grid as dense_dkdv_kernel: (T / 128 key tiles, B * Hkv, splits). Threads
// 0 .. 255 are the consumer warpgroups, 256 .. 383 the producer. Shared memory: K, V [128][D];
// kStages x (q, dO) [64][D] (each 1024-byte aligned, as the TMA's swizzle needs); kStages x (lse,
// delta) [64] f32; then the mbarriers full, empty [kStages] each. kTma: q and dO by the TMA from
// `maps` (read only then).
template <int D, bool kTma>
__device__ __forceinline__ void dkdv_pipeline(const KvArgs& a, const Problem& p,
                                              const QueryMaps* maps) {
  constexpr int kQ = kDkdvQueries, kStages = dkdv_stages<D>();
  extern __shared__ unsigned char smem_raw[];
  bf16* k_tile = aligned_smem(smem_raw);  // [128][D]
  bf16* v_tile = k_tile + kRows * D;      // [128][D]
  bf16* stages = v_tile + kRows * D;      // kStages x (q, dO) [64][D]: 1024-byte multiples
  float* row_stats = reinterpret_cast<float*>(stages + kStages * 2 * kQ * D);
  auto q_tile = [&](int stage) { return stages + stage * 2 * kQ * D; };
  auto do_tile = [&](int stage) { return q_tile(stage) + kQ * D; };
  auto lse_of = [&](int stage) { return row_stats + stage * 2 * kQ; };
  auto delta_of = [&](int stage) { return lse_of(stage) + kQ; };
  uint64_t* full = reinterpret_cast<uint64_t*>(row_stats + kStages * 2 * kQ);
  uint64_t* empty = full + kStages;

  const int key0 = blockIdx.x * kRows;
  const int b = blockIdx.y / p.Hkv, kvh = blockIdx.y % p.Hkv;
  const int heads = p.G / a.splits, head0 = kvh * p.G + blockIdx.z * heads;
  // Step i: head head0 + i / n_tiles, queries (first_tile + i % n_tiles) * 64 .. + 63.
  const int first_tile = key0 / kQ, n_tiles = (p.T + kQ - 1) / kQ - first_tile;
  const int n_steps = heads * n_tiles;
  const int group = warpgroup_index(), lane = threadIdx.x % 32;  // group 2: the producer

  if (threadIdx.x < kStages) {
    // One arrival per producer thread, and with the TMA the issuing thread's (with the bytes).
    mma::mbarrier_init(&full[threadIdx.x], kProducerThreads + (kTma ? 1 : 0));
    mma::mbarrier_init(&empty[threadIdx.x], kConsumerWarps);
  }
  __syncthreads();

  // Step i goes to stage i % kStages, whose barriers then run their phase i / kStages: the
  // consumers wait for full parity (i / kStages) & 1, the producer for the release of step
  // i - kStages (empty parity (i / kStages - 1) & 1). A stage's phases cannot run two ahead of a
  // waiter: step i + kStages is copied only after both warpgroups released step i, and every
  // consumer warp waits for a step's full phase before it releases the step (also where it skips
  // the step's math), so no release counts towards a later phase.
  if (group == 2) {
    producer_registers();
    const int thread = threadIdx.x - kConsumerThreads;
    // lse (threads 0 .. 63) or delta (64 .. 127) of the thread's query: [B, Hq, T] f32.
    const float* stats = thread < kQ ? a.lse : a.delta;
    if (kTma && thread == 0) {
      tma::prefetch_map(&maps->q);
      tma::prefetch_map(&maps->dout);
    }
    int head = head0, tile = first_tile;  // step i's head and query tile
    for (int i = 0; i < n_steps; ++i) {
      const int stage = i % kStages, q0 = tile * kQ;
      if (i >= kStages) mma::mbarrier_wait(&empty[stage], (i / kStages - 1) & 1);
      if constexpr (kTma) {
        if (thread == 0) {
          tma::arrive_expect_tx(&full[stage], 2 * kQ * D * 2);  // out-of-bounds rows count too
          tma::load_rows<D, kQ>(q_tile(stage), &maps->q, &full[stage], b, head, q0);
          tma::load_rows<D, kQ>(do_tile(stage), &maps->dout, &full[stage], b, head, q0);
        }
      } else {
        copy_rows<D, kQ, kProducerThreads, kQ>(q_tile(stage), a.q, b, head, p.q_heads, q0, p.T, 0,
                                               thread);
        copy_rows<D, kQ, kProducerThreads, kQ>(do_tile(stage), a.dout, b, head, p.o_heads, q0, p.T,
                                               0, thread);
      }
      const int t = q0 + thread % kQ;
      cp_async_4(lse_of(stage) + thread, stats + (size_t(b) * p.Hq + head) * p.T + t, t < p.T);
      mma::cp_async_arrive(&full[stage]);
      if (++tile == first_tile + n_tiles) {
        tile = first_tile;
        ++head;
      }
    }
    return;  // the copies still in flight complete their barriers by themselves
  }
  consumer_registers();

  const int warp = threadIdx.x % 128 / 32, group_key0 = key0 + group * 64;
  int key[2];  // the thread's rows (keys): accumulator registers 4c + 2r + (0, 1) are key r
#pragma unroll
  for (int r = 0; r < 2; ++r) key[r] = group_key0 + warp * 16 + lane / 4 + 8 * r;
  // Each warpgroup copies its own 64 rows of K and V (rows 64 group .. + 63 of the tiles, the
  // only ones its dkdv_tile reads); the producer starts on the query side at once.
  copy_group_rows<D>(k_tile, a.k, b, kvh, p.kv_heads, key0, p.T, group * 64);
  copy_group_rows<D>(v_tile, a.v, b, kvh, p.kv_heads, key0, p.T, group * 64);
  group_rows_landed(group);

  float dk[D / 2] = {}, dv[D / 2] = {};  // m64 x D accumulators
  int tile = first_tile;                 // step i's query tile
  for (int i = 0; i < n_steps; ++i) {
    const int stage = i % kStages, q0 = tile * kQ;
    // The producer's copies of step i have landed; this thread orders them before its
    // tensor-core reads, and the warpgroup meets so that all 128 threads have done so before the
    // first MMA (as the forward's turn barrier and the portable sparse forward's do).
    mma::mbarrier_wait(&full[stage], (i / kStages) & 1);
    wgmma::fence_async_proxy();
    named_barrier_sync(kGroupBarrier + group, 128);
    // Every query before every key of this warpgroup: warpgroup 1 on the diagonal tile.
    if (q0 + kQ - 1 >= group_key0)
      dkdv_tile<D, kRows>(dk, dv, k_tile, v_tile, group * 64, q_tile(stage), do_tile(stage),
                          lse_of(stage), delta_of(stage), p, lane, [&](int col, int r) {
                            const int query = q0 + col;
                            return query >= key[r] && query < p.T;
                          });
    // dkdv_tile's MMAs have completed (wgmma.wait_group 0) and its lse/delta loads were used:
    // the warp no longer reads the stage.
    __syncwarp();
    if (lane == 0) mma::mbarrier_arrive(&empty[stage]);
    if (++tile == first_tile + n_tiles) tile = first_tile;
  }
  store_dkdv<D>(a, p, b, kvh, key, lane, false, dk, dv);
}
#endif

// q and dO copied with cp.async by the producer warpgroup (INFLLM_ATTENTION_COPY=cp_async).
template <int D>
__global__ void __launch_bounds__(kPipelineThreads, 1) pipelined_dkdv_kernel(KvArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  dkdv_pipeline<D, false>(a, p, nullptr);
#endif
}

// q and dO loaded by the TMA (the default): maps of 64-column x kDkdvQueries boxes.
template <int D>
__global__ void __launch_bounds__(kPipelineThreads, 1)
    pipelined_dkdv_tma_kernel(KvArgs a, Problem p, const __grid_constant__ QueryMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  dkdv_pipeline<D, true>(a, p, &maps);
#endif
}

}  // namespace

void pipelined_dkdv(int D, const KvArgs& a, const Problem& p, cudaStream_t stream, bool tma) {
  const dim3 grid((p.T + kRows - 1) / kRows, p.B * p.Hkv, a.splits);
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    if (tma)
      launch_kernel(pipelined_dkdv_tma_kernel<kD>, grid, kPipelineThreads,
                    pipelined_dkdv_smem<kD>(), stream, a, p,
                    make_query_maps(kD, kDkdvQueries, a.q, a.dout, p));
    else
      launch(pipelined_dkdv_kernel<kD>, grid, pipelined_dkdv_smem<kD>(), stream, a, p,
             kPipelineThreads);
  });
}

}  // namespace infllm::attention::cuda::sm90
