// The dense dK/dV pass on Hopper as a warp-specialized pipeline, with the backward's dQ fused in
// (the default; INFLLM_ATTENTION_DKDV=rows runs the row kernel, INFLLM_ATTENTION_DQ=pipelined a dQ
// pass of its own before this one, flash_attention_sm90.h): the same CTAs as
// dense_dkdv_kernel<D, false> (flash_attention_sm90_dense.cu: 128 keys of one KV head, 64 per
// consumer warpgroup, query tiles from the diagonal to the end for each head of the CTA's share
// of the group, the same head split), the same tile step (dkdv_tile), masks and stores
// (store_dkdv): dK and dV are what the row-walking kernel computes, bit for bit. A step takes
// kQ = step_queries(D) queries: 64 at D = 128 as the row kernel does, 128 at D = 64, where a
// 64-query step's S^T and dP^T (m64n64, both operands from shared memory) are bound by shared
// memory reads and every 64 queries would pay a step's waits, stat reads and dQ reduction;
// dkdv_tile adds a 128-query tile's terms in the order of two 64-query ones. Scheduled
// differently from the row kernel:
//  * a producer warpgroup (warps 8-11) only copies the query side of each step (q and dO
//    [kQ][D], lse and delta [kQ]) into a ring of kStages stages: q and dO with the TMA, one
//    thread issuing their boxes (the default; flash_attention_sm90_tma.cuh), or with 16-byte
//    cp.async from every producer thread (INFLLM_ATTENTION_COPY=cp_async); lse and delta with
//    4-byte cp.async either way (by 64 threads with the TMA, one of each, by all 128 without).
//    Each stage has two mbarriers: full completes when the producer's copies have landed
//    (cp.async.mbarrier.arrive.noinc, one arrival per copying thread, plus with the TMA the
//    issuing thread's arrival with the tiles' bytes, expect_tx), empty when all 8 consumer warps
//    have finished the step's MMAs and reads. No __syncthreads after the start: a warpgroup
//    waits only for the tile it needs, and without the fused dQ the two warpgroups may drift
//    apart by up to kStages - 1 steps, so one's exponentials and conversions run while the
//    other's MMAs do.
//  * two consumer warpgroups (warps 0-3, 4-7) of 64 keys each copy their own K and V rows once,
//    then run dkdv_tile on every stage in turn; dK and dV stay in registers to the end. The
//    producer gives its registers to them (setmaxnreg): 384 threads start with 168 each, the
//    producer drops to 40, the consumers rise to 232 (PipelineSplit<2>).
//  * with the fused dQ (INFLLM_ATTENTION_DQ=fused, the default; TMA loads only) each step also
//    gives the tile's dQ = dS K over the CTA's 128 keys, so no dQ pass recomputes S and dP (5
//    matmul units instead of 7). The warpgroups store their halves of dS^T ([128 keys][kQ
//    queries] bf16) in shared memory; then each multiplies its half of the [kQ][D] product
//    (m64n64 over the 128 keys: its 64 columns of D at D = 128, its 64 queries at D = 64), issued
//    while the warpgroup's dV and dK MMAs still run. The product goes to a shared f32 dQ tile,
//    and one producer thread (warp 10) adds that tile to the f32 dQ sums in global memory with a
//    single bulk reduction (cp.reduce.async.bulk) while the consumers go on: no per-thread
//    atomics. dS^T is double-buffered (step i in buffer i % 2), the dQ tile double-buffered at
//    D = 128 and single at D = 64 (dq_buffers), and four more mbarriers per buffer order them:
//    ds_full (8 warps stored dS^T), ds_empty (8 warps are done reading it), dq_full (8 warps
//    stored the dQ tile), dq_empty (its reduction has read it). The sums are laid out per
//    kQ-query tile (dq_tile_sums_size), fragment-major so that every store to the shared tile is
//    conflict-free, and dq_from_tile_sums turns them into bf16 dQ.
//    The f32 additions land in the order the CTAs reach them: dQ's rounding is not reproducible
//    run to run (the separate dQ passes' is).
#include <cuda_runtime.h>

#include <algorithm>

#include "attention/flash_attention_sm90.h"
#include "attention/flash_attention_sm90_pipeline.cuh"
#include "attention/flash_attention_sm90_tiles.cuh"

namespace infllm::attention::cuda::sm90 {
namespace {

// Registers: the pipeline header's split (producer 40, consumers 232). The consumers hold dK and
// dV (m64 x D f32 each: D registers) across the walk, and inside dkdv_tile S^T and dP^T (kQ / 2
// each) and then their A fragments (kQ / 4 each): 128 + 128 at D = 128, 64 + 256 at D = 64, the
// same count; they fit 232 without spills. The producer's copy loop (two 64-bit sources, the head
// and tile counters) spills at 24, the only lower count that would give the consumers 240.

// Queries per step, and rows of the fused dQ's tiles: a step's q and dO tiles hold kQ x D = 8192
// elements at either head dim.
constexpr int step_queries(int D) {
  return D == 64 ? 128 : 64;
}

// Stages of the query-side ring. Shared memory (227 KB = 232448 bytes per CTA at most): 1024 for
// the swizzle's alignment, K and V of 128 keys (2 x 128 x D x 2 bytes), then per stage q and dO
// (2 x kQ x D x 2 bytes), lse and delta (2 x kQ x 4) and two 8-byte mbarriers:
//   D = 128: 1024 + 65536 + 4 x (32768 + 512 + 16) = 199744 bytes (195 KB); a fifth stage needs
//            233040 > 232448.
//   D = 64:  1024 + 32768 + 4 x (32768 + 1024 + 16) = 169024 bytes (165 KB).
// A stage carries the same bytes and MMA work at both head dims. Powers of two: the stage and
// parity of step i are a mask and a shift. The fused dQ adds two dS^T buffers (2 x 128 x kQ x 2
// bytes), dq_buffers f32 dQ tiles (kQ x D x 4 each) and 8 mbarriers, which leaves room for half
// the stages: at D = 128 1024 + 65536 + 32768 + 2 x 32768 + 2 x 33296 + 64 = 231520 bytes (a
// third stage needs 264816), at D = 64 1024 + 32768 + 65536 + 32768 + 2 x 33808 + 64 = 199776 (a
// second dQ tile would need 232544 > 232448: the reduction reads a tile in a fraction of a step).
template <int D, bool kFusedDq>
constexpr int dkdv_stages() {
  return kFusedDq ? 2 : 4;
}
constexpr int dq_buffers(int D) {
  return D == 64 ? 1 : 2;
}

template <int D>
constexpr size_t dkdv_stage_bytes() {
  constexpr int kQ = step_queries(D);
  return size_t(2) * kQ * D * 2 + 2 * kQ * 4 + 2 * sizeof(uint64_t);
}

// The fused dQ's buffers: dS^T [128 keys][kQ queries] bf16, two, and dq_buffers dQ tiles [kQ][D]
// f32.
template <int D>
constexpr size_t fused_dq_bytes() {
  constexpr int kQ = step_queries(D);
  return 2 * size_t(kRows) * kQ * 2 + dq_buffers(D) * size_t(kQ) * D * 4 + 8 * sizeof(uint64_t);
}

template <int D, bool kFusedDq>
constexpr size_t pipelined_dkdv_smem() {
  return 1024 + size_t(2) * kRows * D * 2 + dkdv_stages<D, kFusedDq>() * dkdv_stage_bytes<D>() +
         (kFusedDq ? fused_dq_bytes<D>() : 0);
}
static_assert(pipelined_dkdv_smem<128, false>() == 199744 &&
              pipelined_dkdv_smem<64, false>() == 169024);
static_assert(pipelined_dkdv_smem<128, false>() + dkdv_stage_bytes<128>() > 227 * 1024);
static_assert(pipelined_dkdv_smem<128, true>() == 231520 &&
              pipelined_dkdv_smem<64, true>() == 199776);
static_assert(pipelined_dkdv_smem<64, true>() + 32768 > 227 * 1024);

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Used only by the sm_90a kernel bodies (the portable PTX pass compiles them empty).
constexpr int kGroupBarrier = 2;  // named barriers 2, 3: one consumer warpgroup's 128 threads
// Producer threads that copy lse and delta (and arrive on full): with the TMA threads 0 .. 63
// (warps 8, 9), which leaves warp 10 free to be the fused dQ's reducer.
constexpr int kTmaStatThreads = 64;

// Where the fused dQ's shared [kQ][D] tile keeps accumulator register 4c + e of lane `lane` of
// warp `warp` (0 .. 3) of consumer warpgroup `group`, whose m64n64 is the tile's half `group`
// (its columns 64 group .. + 63 at D = 128, its rows 64 group .. + 63 at D = 64): float4
// ((4 group + warp) 8 + c) 32 + lane, element e. A warp's store of one c then covers 512
// contiguous bytes (no bank conflicts); dq_from_tile_sums reads the same order.
__device__ __forceinline__ int dq_fragment_float4(int group, int warp, int c, int lane) {
  return ((group * 4 + warp) * 8 + c) * 32 + lane;
}

// The kernels' body. Grid as dense_dkdv_kernel: (T / 128 key tiles, B * Hkv, splits). Threads
// 0 .. 255 are the consumer warpgroups, 256 .. 383 the producer. Shared memory: K, V [128][D];
// with kFusedDq dS^T [128][kQ] x 2 and the dQ tile [kQ][D] f32 x dq_buffers; kStages x (q, dO)
// [kQ][D] (each 1024-byte aligned, as the TMA's swizzle needs); kStages x (lse, delta) [kQ] f32;
// then the mbarriers full, empty [kStages] and with kFusedDq ds_full, ds_empty [2], dq_full,
// dq_empty [dq_buffers]. kTma:
// q and dO by the TMA from `maps` (read only then); kFusedDq needs it (the reducer is a producer
// thread that the cp.async copy would occupy).
template <int D, bool kTma, bool kFusedDq>
__device__ __forceinline__ void dkdv_pipeline(const KvArgs& a, const Problem& p,
                                              const QueryMaps* maps) {
  static_assert(kTma || !kFusedDq);
  constexpr int kQ = step_queries(D), kStages = dkdv_stages<D, kFusedDq>();
  constexpr int kDqBuffers = dq_buffers(D);
  constexpr int kStatThreads = kTma ? kTmaStatThreads : kProducerThreads;
  extern __shared__ unsigned char smem_raw[];
  bf16* k_tile = aligned_smem(smem_raw);  // [128][D]
  bf16* v_tile = k_tile + kRows * D;      // [128][D]
  bf16* ds_bufs = v_tile + kRows * D;     // kFusedDq: 2 x dS^T [128][kQ]
  float* dq_bufs = reinterpret_cast<float*>(ds_bufs + (kFusedDq ? 2 * kRows * kQ : 0));
  bf16* stages = reinterpret_cast<bf16*>(dq_bufs + (kFusedDq ? kDqBuffers * kQ * D : 0));
  float* row_stats = reinterpret_cast<float*>(stages + kStages * 2 * kQ * D);
  auto q_tile = [&](int stage) { return stages + stage * 2 * kQ * D; };
  auto do_tile = [&](int stage) { return q_tile(stage) + kQ * D; };
  auto lse_of = [&](int stage) { return row_stats + stage * 2 * kQ; };
  auto delta_of = [&](int stage) { return lse_of(stage) + kQ; };
  auto ds_buf = [&](int j) { return ds_bufs + j * kRows * kQ; };
  auto dq_buf = [&](int j) { return dq_bufs + j * kQ * D; };
  uint64_t* full = reinterpret_cast<uint64_t*>(row_stats + kStages * 2 * kQ);
  uint64_t* empty = full + kStages;
  uint64_t* ds_full = empty + kStages;  // kFusedDq: [2] each
  uint64_t* ds_empty = ds_full + 2;
  uint64_t* dq_full = ds_empty + 2;
  uint64_t* dq_empty = dq_full + kDqBuffers;

  const int key0 = blockIdx.x * kRows;
  const int b = blockIdx.y / p.Hkv, kvh = blockIdx.y % p.Hkv;
  const int heads = p.G / a.splits, head0 = kvh * p.G + blockIdx.z * heads;
  // Step i: head head0 + i / n_tiles, queries (first_tile + i % n_tiles) * kQ .. + kQ - 1.
  const int first_tile = key0 / kQ, n_tiles = (p.T + kQ - 1) / kQ - first_tile;
  const int n_steps = heads * n_tiles;
  const int group = warpgroup_index(), lane = threadIdx.x % 32;  // group 2: the producer

  if (threadIdx.x < kStages) {
    // One arrival per copying thread, and with the TMA the issuing thread's (with the bytes).
    mma::mbarrier_init(&full[threadIdx.x], kStatThreads + (kTma ? 1 : 0));
    mma::mbarrier_init(&empty[threadIdx.x], kConsumerWarps);
  }
  if (kFusedDq && threadIdx.x < 2) {
    mma::mbarrier_init(&ds_full[threadIdx.x], kConsumerWarps);
    mma::mbarrier_init(&ds_empty[threadIdx.x], kConsumerWarps);
  }
  if (kFusedDq && threadIdx.x < kDqBuffers) {
    mma::mbarrier_init(&dq_full[threadIdx.x], kConsumerWarps);
    mma::mbarrier_init(&dq_empty[threadIdx.x], 1);
  }
  __syncthreads();

  // Step i goes to stage i % kStages, whose barriers then run their phase i / kStages: the
  // consumers wait for full parity (i / kStages) & 1, the producer for the release of step
  // i - kStages (empty parity (i / kStages - 1) & 1). A stage's phases cannot run two ahead of a
  // waiter: step i + kStages is copied only after both warpgroups released step i, and every
  // consumer warp waits for a step's full phase before it releases the step (also where it skips
  // the step's math), so no release counts towards a later phase. The fused dQ's buffers work
  // the same way with 2 (dS^T) or kDqBuffers (the dQ tile) for kStages: dS^T buffer i % 2, phase
  // i / 2. Before storing step i's dS^T half a warpgroup waits until all 8 warps are done reading
  // step i - 2's (ds_empty); each warp arrives there at the end of its step, once its MMAs (the
  // dQ product's among them) have landed, after its own ds_full arrival: so neither barrier of a
  // buffer runs a phase ahead.
  if (group == 2) {
    producer_registers();
    const int thread = threadIdx.x - kConsumerThreads;
    if constexpr (kFusedDq) {
      if (thread == kTmaStatThreads) {  // warp 10's first lane: the dQ reducer
        int head = head0, tile = first_tile;
        const int query_tiles = (p.T + kQ - 1) / kQ;
        for (int i = 0; i < n_steps; ++i) {
          const int j = i % kDqBuffers;
          mma::mbarrier_wait(&dq_full[j], (i / kDqBuffers) & 1);
          tma::reduce_add(a.dq_acc + ((size_t(b) * p.Hq + head) * query_tiles + tile) * kQ * D,
                          dq_buf(j), kQ * D * 4);
          tma::bulk_commit();
          tma::bulk_wait_read<0>();
          mma::mbarrier_arrive(&dq_empty[j]);
          if (++tile == first_tile + n_tiles) {
            tile = first_tile;
            ++head;
          }
        }
        tma::bulk_wait_done<0>();
        return;
      }
    }
    if (thread >= kStatThreads) return;
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
      // lse and delta of the step's queries ([B, Hq, T] f32), query q0 + e at entry e of each.
      const size_t row0 = (size_t(b) * p.Hq + head) * p.T + q0;
#pragma unroll
      for (int r = 0; r < (kQ + kStatThreads - 1) / kStatThreads; ++r) {
        const int e = thread + r * kStatThreads;
        if (e >= kQ) break;
        const bool in_sequence = q0 + e < p.T;
        cp_async_4(lse_of(stage) + e, a.lse + row0 + e, in_sequence);
        cp_async_4(delta_of(stage) + e, a.delta + row0 + e, in_sequence);
      }
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
  // only ones its dkdv_tile reads; the fused dQ's product reads the other warpgroup's K rows only
  // after that warpgroup's ds_full arrival); the producer starts on the query side at once.
  copy_group_rows<D>(k_tile, a.k, b, kvh, p.kv_heads, key0, p.T, group * 64);
  copy_group_rows<D>(v_tile, a.v, b, kvh, p.kv_heads, key0, p.T, group * 64);
  group_rows_landed(group);

  float dk[D / 2] = {}, dv[D / 2] = {};  // m64 x D accumulators
  int tile = first_tile;                 // step i's query tile
  for (int i = 0; i < n_steps; ++i) {
    const int stage = i % kStages, q0 = tile * kQ, j = i & 1, jq = i % kDqBuffers;
    // The producer's copies of step i have landed; this thread orders them before its
    // tensor-core reads, and the warpgroup meets so that all 128 threads have done so before the
    // first MMA (as the forward's turn barrier and the portable sparse forward's do).
    mma::mbarrier_wait(&full[stage], (i / kStages) & 1);
    wgmma::fence_async_proxy();
    named_barrier_sync(kGroupBarrier + group, 128);
    // This warpgroup's half of dS^T: keys group_key0 .. + 63 are rows 64 group .. + 63 of the
    // buffer.
    bf16* ds = kFusedDq ? ds_buf(j) : nullptr;
    if (kFusedDq && i >= 2) mma::mbarrier_wait(&ds_empty[j], ((i >> 1) - 1) & 1);
    // The warpgroup's half of the fused dQ's [kQ][D] product: columns col0 .. + 63 of queries
    // query0 .. + 63.
    const int col0 = D == 128 ? group * 64 : 0, query0 = D == 128 ? 0 : group * 64;
    float dq[32] = {};  // m64n64
    // Once this warp's dS^T half is stored: publish it, and issue dQ = dS K as soon as the other
    // warpgroup's half is there too, while this warpgroup's dV and dK MMAs still run.
    auto after_ds = [&] {
      if constexpr (kFusedDq) {
        wgmma::fence_async_proxy();  // this thread's dS^T stores, before the tensor cores read them
        __syncwarp();
        if (lane == 0) mma::mbarrier_arrive(&ds_full[j]);
        mma::mbarrier_wait(&ds_full[j], (i >> 1) & 1);
        dq_product<kRows, kRows, 64>(dq, ds_buf(j), k_tile, col0, query0);
      }
    };
    // Every query before every key of this warpgroup: warpgroup 1 on the diagonal tile at
    // D = 128 (at D = 64 a step's 128 queries reach past both warpgroups' keys).
    if (q0 + kQ - 1 >= group_key0) {
      dkdv_tile<D, kRows, kQ>(
          dk, dv, k_tile, v_tile, group * 64, q_tile(stage), do_tile(stage), lse_of(stage),
          delta_of(stage), p, lane,
          [&](int col, int r) {
            const int query = q0 + col;
            return query >= key[r] && query < p.T;
          },
          ds, false, after_ds);
    } else if (kFusedDq) {  // dS^T = 0: rows 64 group .. + 63, 8 KB in each 64-column panel
      for (int e = threadIdx.x % 128; e < 64 * kQ / 8; e += 128)
        reinterpret_cast<uint4*>(ds + e / 512 * kRows * 64 + group * 64 * 64)[e % 512] = uint4{};
      after_ds();
    }
    // dkdv_tile's MMAs have completed (wgmma.wait_group 0) and its lse/delta loads were used:
    // the warp no longer reads the stage; nor, after dq_product's wait, dS^T.
    __syncwarp();
    if (lane == 0) {
      mma::mbarrier_arrive(&empty[stage]);
      if (kFusedDq) mma::mbarrier_arrive(&ds_empty[j]);
    }
    if constexpr (kFusedDq) {
      if (i >= kDqBuffers) mma::mbarrier_wait(&dq_empty[jq], (i / kDqBuffers - 1) & 1);
      float4* to = reinterpret_cast<float4*>(dq_buf(jq));
#pragma unroll
      for (int c = 0; c < 8; ++c)
        to[dq_fragment_float4(group, warp, c, lane)] =
            make_float4(dq[4 * c], dq[4 * c + 1], dq[4 * c + 2], dq[4 * c + 3]);
      wgmma::fence_async_proxy();  // before the bulk reduction (async proxy) reads the tile
      __syncwarp();
      if (lane == 0) mma::mbarrier_arrive(&dq_full[jq]);
    }
    if (++tile == first_tile + n_tiles) tile = first_tile;
  }
  store_dkdv<D>(a, p, b, kvh, key, lane, false, dk, dv);
}
#endif

// q and dO copied with cp.async by the producer warpgroup (INFLLM_ATTENTION_COPY=cp_async).
template <int D>
__global__ void __launch_bounds__(kPipelineThreads, 1) pipelined_dkdv_kernel(KvArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  dkdv_pipeline<D, false, false>(a, p, nullptr);
#endif
}

// q and dO loaded by the TMA (the default): maps of 64-column x step_queries(D) boxes. kFusedDq: dQ
// too, into a.dq_acc's tile sums.
template <int D, bool kFusedDq>
__global__ void __launch_bounds__(kPipelineThreads, 1)
    pipelined_dkdv_tma_kernel(KvArgs a, Problem p, const __grid_constant__ QueryMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  dkdv_pipeline<D, true, kFusedDq>(a, p, &maps);
#endif
}

// dq = scale * the fused dQ's tile sums, one thread per float4 of them (dq_fragment_float4's
// order): two columns of two rows, 8 apart.
__global__ void dq_from_tile_sums_kernel(const float* dq_acc, Problem p, int D, bf16* dq) {
  const int kQ = step_queries(D), query_tiles = (p.T + kQ - 1) / kQ;
  const int tile_float4s = kQ * D / 4;
  const size_t n = size_t(p.B) * p.Hq * query_tiles * tile_float4s;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const size_t tile_index = i / tile_float4s;  // ((b Hq + head) query_tiles + tile)
    const int f = int(i % tile_float4s), lane = f % 32, c = f / 32 % 8, w = f / 256;
    const int tile = int(tile_index % query_tiles);
    const int head = int(tile_index / query_tiles % p.Hq), b = int(tile_index / query_tiles / p.Hq);
    // Half w / 4 of the tile: its 64 columns at D = 128, its 64 rows at D = 64.
    const int half = w / 4;
    const int row = (D == 128 ? 0 : 64 * half) + w % 4 * 16 + lane / 4;
    const int col = (D == 128 ? 64 * half : 0) + 8 * c + 2 * (lane % 4);
    const float4 x = reinterpret_cast<const float4*>(dq_acc)[i];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int t = tile * kQ + row + 8 * r;
      if (t >= p.T) continue;
      *reinterpret_cast<uint32_t*>(dq + ((size_t(b) * p.T + t) * p.q_heads + head) * D + col) =
          pack_bf16((r ? x.z : x.x) * p.scale, (r ? x.w : x.y) * p.scale);
    }
  }
}

}  // namespace

void pipelined_dkdv(int D, const KvArgs& a, const Problem& p, cudaStream_t stream, bool tma) {
  const dim3 grid((p.T + kRows - 1) / kRows, p.B * p.Hkv, a.splits);
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    if (tma) {
      const QueryMaps maps = make_query_maps(kD, step_queries(kD), a.q, a.dout, p);
      if (a.dq_acc != nullptr)
        launch_kernel(pipelined_dkdv_tma_kernel<kD, true>, grid, kPipelineThreads,
                      pipelined_dkdv_smem<kD, true>(), stream, a, p, maps);
      else
        launch_kernel(pipelined_dkdv_tma_kernel<kD, false>, grid, kPipelineThreads,
                      pipelined_dkdv_smem<kD, false>(), stream, a, p, maps);
    } else {
      launch(pipelined_dkdv_kernel<kD>, grid, pipelined_dkdv_smem<kD, false>(), stream, a, p,
             kPipelineThreads);
    }
  });
}

size_t dq_tile_sums_size(int D, const Problem& p) {
  const int kQ = step_queries(D);
  return size_t(p.B) * p.Hq * ((p.T + kQ - 1) / kQ) * kQ * D;
}

void dq_from_tile_sums(int D, const float* dq_acc, const Problem& p, bf16* dq,
                       cudaStream_t stream) {
  const size_t float4s = dq_tile_sums_size(D, p) / 4;
  dq_from_tile_sums_kernel<<<int(std::min<size_t>((float4s + 255) / 256, 65536)), 256, 0, stream>>>(
      dq_acc, p, D, dq);
  CUDA_CHECK_LAUNCH();
}

}  // namespace infllm::attention::cuda::sm90
