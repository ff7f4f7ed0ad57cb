// The warp-specialized pipeline that the Hopper dense forward (flash_attention_sm90_forward.cu)
// and the pipelined dQ pass (flash_attention_sm90_dq.cu) share; the pipelined dK/dV pass
// (flash_attention_sm90_dkdv_pipelined.cu) takes its thread and register split and row copies
// (with a ring of query tiles of its own). The forward and dQ: 64 query rows of one head per
// consumer warpgroup, 128 per CTA as the row pass (the forward at D = 64: 192), scheduled as
//  * a producer warpgroup (the last) that only copies K and V tiles into a ring of kStages
//    stages (KvRing). Each stage has three mbarriers: k_full and v_full complete when the tile's
//    K (V) has landed, empty when all consumer warps have finished the MMAs that read the
//    stage. With kTma (the default) one producer thread loads each tile with the TMA
//    (flash_attention_sm90_tma.cuh): k_full and v_full take its one arrival with the tile's
//    bytes (expect_tx), completed as the TMA writes them. Without (INFLLM_ATTENTION_COPY=cp_async)
//    every producer thread copies 16-byte chunks with cp.async and arrives once per tile
//    (cp.async.mbarrier.arrive); empty and the consumers' side stay the same. No __syncthreads
//    after the start: a warpgroup waits only for the data it needs. The producer gives registers to
//    the consumers (setmaxnreg, PipelineSplit): the producer drops to its kProducerRegisters,
//    the consumers rise to kConsumerRegisters.
//  * two (or three) consumer warpgroups (warps 0-3, 4-7, 8-11) of 64 rows each that take turns at
//    the tensor cores in a fixed round (Turns): named barrier kTurnBarrier + g is warpgroup g's
//    turn. A turn issues the MMAs of one step and hands the turn over at once, so the other
//    warpgroups' register math runs while one's MMAs do and the tensor cores see a steady stream.
//  * within a warpgroup (pingpong_walk), turn t issues the tile's first product (scores) for tile
//    t and its second product (a register-A MMA into the accumulator) for tile t - 1 as two commit
//    groups, waits for the first alone (wgmma.wait_group 1) and works on it while the second
//    still runs.
#pragma once

#include <cuda_runtime.h>

#include "attention/flash_attention_sm90_tiles.cuh"
#include "attention/flash_attention_sm90_tma.cuh"

namespace infllm::attention::cuda::sm90 {

constexpr int kProducerThreads = 128;  // one warpgroup: setmaxnreg works per warpgroup

// The threads and registers of a pipeline with kGroups consumer warpgroups of 64 rows each
// (threads 0 .. 128 kGroups - 1) and the producer warpgroup after them. 65536 registers per SM:
// two groups: 384 x 168 at launch = 128 x 40 + 256 x 232 after setmaxnreg; three: 512 x 128 =
// 128 x 24 + 384 x 160.
template <int kGroups>
struct PipelineSplit {
  static_assert(kGroups == 2 || kGroups == 3);
  static constexpr int kConsumerThreads = 128 * kGroups;
  static constexpr int kThreads = kConsumerThreads + kProducerThreads;
  static constexpr int kConsumerWarps = kConsumerThreads / 32;  // arrivals that free a stage
  static constexpr int kRows = 64 * kGroups;                    // query rows per CTA
  static constexpr int kProducerRegisters = kGroups == 2 ? 40 : 24;
  static constexpr int kConsumerRegisters = kGroups == 2 ? 232 : 160;
  static_assert(kProducerThreads * kProducerRegisters + kConsumerThreads * kConsumerRegisters <=
                kThreads * (65536 / kThreads));
};
// The two-group split that the dQ and dK/dV passes use.
constexpr int kConsumerThreads = PipelineSplit<2>::kConsumerThreads;
constexpr int kPipelineThreads = PipelineSplit<2>::kThreads;
static_assert(kConsumerThreads == kThreads);

// Shared memory of a pipelined kernel: the 1024-byte alignment pad, the row tiles the consumers
// keep (Q; dQ: Q and dO, [kTileRows][D] each), then kStages x (K, V) [kKeys][D] and 3 mbarriers
// per stage.
template <int D, int kKeys, int kStages, int kRowTiles, int kTileRows = kRows>
constexpr size_t pipeline_smem() {
  return 1024 + size_t(kRowTiles) * kTileRows * D * 2 +
         size_t(kStages) * (size_t(2) * kKeys * D * 2 + 3 * sizeof(uint64_t));
}

// load_tile's copy with the copying thread's index given (0 .. kCopyThreads - 1), for copiers
// that are not threads 0 .. kCopyThreads - 1 of the CTA (the producer, a consumer warpgroup):
// rows [row0, row0 + kCopyRows) of head `head` of a [B, T, heads, D] tensor into rows
// tile_row0 .. of a swizzled [kTileRows][D] tile; rows >= T are zero-filled.
template <int D, int kTileRows, int kCopyThreads, int kCopyRows>
__device__ __forceinline__ void copy_rows(bf16* tile, const bf16* src, int b, int head, int heads,
                                          int row0, int T, int tile_row0, int thread) {
  constexpr int kChunks = D / 8, kRowsPerStep = kCopyThreads / kChunks;
  // Whole 8-row swizzle periods per step: the destination moves by a constant.
  static_assert(kCopyThreads % kChunks == 0 && kRowsPerStep % 8 == 0 &&
                kCopyRows % kRowsPerStep == 0);
  const int chunk = thread % kChunks, r0 = thread / kChunks;
  const bf16* from = src + ((size_t(b) * T + row0 + r0) * heads + head) * D + chunk * 8;
  const size_t step = size_t(kRowsPerStep) * heads * D;
  const uint32_t to = mma::smem_u32(tile + tile_offset<kTileRows>(tile_row0 + r0, chunk * 8));
  const int rows_left = T - row0 - r0;  // rows i * kRowsPerStep below it are in the sequence
  // Partly unrolled: the producer runs in few registers (kProducerRegisters).
#pragma unroll 4
  for (int i = 0; i < kCopyRows / kRowsPerStep; ++i) {
    const bool valid = i * kRowsPerStep < rows_left;
    cp_async_16(to + i * kRowsPerStep * 128, valid ? from + i * step : src, valid);
  }
}

// A consumer warpgroup's 64 rows (group_row0 = 64 g) of a [B, T, heads, D] tensor into its part
// of a [kTileRows][D] tile, copied by the warpgroup itself (the producer starts on K at once).
template <int D, int kTileRows = kRows>
__device__ __forceinline__ void copy_group_rows(bf16* tile, const bf16* src, int b, int head,
                                                int heads, int row0, int T, int group_row0) {
  copy_rows<D, kTileRows, 128, 64>(tile, src, b, head, heads, row0 + group_row0, T, group_row0,
                                   threadIdx.x % 128);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Used only by the sm_90a kernel bodies (the portable PTX pass compiles them empty).
constexpr int kConsumerWarps = PipelineSplit<2>::kConsumerWarps;
constexpr int kTurnBarrier = 2;   // named barriers 2 .. 4: the warpgroups' turns (256 threads)
constexpr int kQueryBarrier = 5;  // named barriers 5 .. 7: a warpgroup's own rows landed (128)

__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// The register split of PipelineSplit; every thread of the warpgroup calls it.
template <int kGroups = 2>
__device__ __forceinline__ void producer_registers() {
  asm volatile(
      "setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(PipelineSplit<kGroups>::kProducerRegisters));
}
template <int kGroups = 2>
__device__ __forceinline__ void consumer_registers() {
  asm volatile(
      "setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(PipelineSplit<kGroups>::kConsumerRegisters));
}

// Waits for the warpgroup's own row copies (copy_group_rows), publishes them to its tensor cores.
__device__ __forceinline__ void group_rows_landed(int group) {
  cp_async_commit();
  cp_async_wait<0>();
  wgmma::fence_async_proxy();
  named_barrier_sync(kQueryBarrier + group, 128);
}

// The K/V ring in shared memory at `stages`: kStages x (K, V) [kKeys][D], then the mbarriers
// k_full, v_full, empty [kStages] each. Tile j goes to stage j % kStages, whose barriers then run
// their phase j / kStages: the consumers wait for full parity (j / kStages) & 1, the producer for
// the release of tile j - kStages (empty parity (j / kStages - 1) & 1). A stage's phases cannot
// run two ahead of a waiter: tile j + kStages is copied only after every consumer warpgroup
// released tile j. kTma: the TMA producer (produce_tma); every tile then starts 1024-byte aligned
// (the ring and the tiles before it are whole multiples of 1024 bytes past aligned_smem), as is its
// second panel at D = 128 (kKeys x 128 bytes on). kGroups: the consumer warpgroups
// (PipelineSplit).
template <int D, int kKeys, int kStages, bool kTma = false, int kGroups = 2>
struct KvRing {
  static_assert(!kTma || (kKeys * 128) % 1024 == 0);
  using Split = PipelineSplit<kGroups>;
  bf16* stages;
  uint64_t *k_full, *v_full, *empty;

  __device__ explicit KvRing(bf16* base)
      : stages(base),
        k_full(reinterpret_cast<uint64_t*>(base + kStages * 2 * kKeys * D)),
        v_full(k_full + kStages),
        empty(v_full + kStages) {}

  __device__ bf16* k_tile(int j) const { return stages + j % kStages * 2 * kKeys * D; }
  __device__ bf16* v_tile(int j) const { return k_tile(j) + kKeys * D; }

  // By threads 0 .. kStages - 1, before the CTA's one __syncthreads.
  __device__ void init() const {
    if (threadIdx.x < kStages) {
      // One arrival per producer thread (cp.async), or the TMA thread's one (plus tx bytes).
      constexpr int kFullArrivals = kTma ? 1 : kProducerThreads;
      mma::mbarrier_init(&k_full[threadIdx.x], kFullArrivals);
      mma::mbarrier_init(&v_full[threadIdx.x], kFullArrivals);
      mma::mbarrier_init(&empty[threadIdx.x], Split::kConsumerWarps);
    }
  }

  // The CTA's start, by every thread: the barriers set up; then the producer warpgroup (group
  // kGroups) copies the CTA's tiles and is done (false), the consumers claim their registers
  // (true).
  // `maps`: the kernel's __grid_constant__ K/V tensor maps, read only with kTma.
  __device__ bool start(int group, const RowsArgs& a, const Problem& p, int b, int kvh, int n_tiles,
                        const KvMaps* maps = nullptr) const {
    init();
    __syncthreads();
    if (group == kGroups) {
      if constexpr (kTma)
        produce_tma(*maps, b, kvh, n_tiles);
      else
        produce(a, p, b, kvh, n_tiles);
      return false;
    }
    consumer_registers<kGroups>();
    return true;
  }

  // The producer warpgroup's whole life: tiles 0 .. n_tiles - 1 of KV head kvh, keys j kKeys ..
  // (keys >= T zero-filled). The copies still in flight at the end complete their barriers by
  // themselves.
  __device__ void produce(const RowsArgs& a, const Problem& p, int b, int kvh, int n_tiles) const {
    producer_registers<kGroups>();
    const int thread = threadIdx.x - Split::kConsumerThreads;
    for (int j = 0; j < n_tiles; ++j) {
      const int stage = j % kStages, key0 = j * kKeys;
      if (j >= kStages) mma::mbarrier_wait(&empty[stage], (j / kStages - 1) & 1);
      copy_rows<D, kKeys, kProducerThreads, kKeys>(k_tile(j), a.k, b, kvh, p.kv_heads, key0, p.T, 0,
                                                   thread);
      mma::cp_async_arrive(&k_full[stage]);
      copy_rows<D, kKeys, kProducerThreads, kKeys>(v_tile(j), a.v, b, kvh, p.kv_heads, key0, p.T, 0,
                                                   thread);
      mma::cp_async_arrive(&v_full[stage]);
    }
  }

  // produce with the TMA: the same tiles, stages and empty waits, by the warpgroup's first thread
  // alone (the others leave once setmaxnreg, which the whole warpgroup executes, is done). Per
  // tile and tensor: arrive_expect_tx(kKeys * D * 2 bytes) on the full barrier, then D / 64
  // boxes {64 columns, kKeys rows} at coordinates {64 panel, kvh, key0, b} into the tile's
  // panels. The loads in flight at the end complete their barriers by themselves; the CTA's
  // shared memory lives on until the consumers, who wait for them, are done.
  __device__ void produce_tma(const KvMaps& maps, int b, int kvh, int n_tiles) const {
    producer_registers<kGroups>();
    if (threadIdx.x != Split::kConsumerThreads) return;
    tma::prefetch_map(&maps.k);
    tma::prefetch_map(&maps.v);
    for (int j = 0; j < n_tiles; ++j) {
      const int stage = j % kStages, key0 = j * kKeys;
      if (j >= kStages) mma::mbarrier_wait(&empty[stage], (j / kStages - 1) & 1);
      load_tile_tma(k_tile(j), &maps.k, &k_full[stage], b, kvh, key0);
      load_tile_tma(v_tile(j), &maps.v, &v_full[stage], b, kvh, key0);
    }
  }
  __device__ static void load_tile_tma(bf16* tile, const CUtensorMap* map, uint64_t* full, int b,
                                       int kvh, int key0) {
    tma::arrive_expect_tx(full, kKeys * D * 2);  // out-of-bounds rows count too
    tma::load_rows<D, kKeys>(tile, map, full, b, kvh, key0);
  }

  // Waits for tile j's K (V) copies; the caller then fences them for the async proxy before this
  // thread's tensor-core reads, and the turn's bar.sync covers all 128 threads of the warpgroup.
  __device__ void wait_k(int j) const {
    mma::mbarrier_wait(&k_full[j % kStages], (j / kStages) & 1);
  }
  __device__ void wait_v(int j) const {
    mma::mbarrier_wait(&v_full[j % kStages], (j / kStages) & 1);
  }

  // This warp's MMAs that read tile j's stage have completed (wgmma.wait_group before).
  __device__ void release(int j, int lane) const {
    __syncwarp();
    if (lane == 0) mma::mbarrier_arrive(&empty[j % kStages]);
  }
};

// The consumer warpgroups' turns at the tensor cores, in rounds 0, 1, (2,) 0, 1, ...: warpgroup g
// takes its turn at barrier kTurnBarrier + g, which completes once warpgroup g - 1 (the last, for
// g = 0) has handed it over (bar.arrive; 256 threads: the two warpgroups that meet there). All
// warpgroups take the same number of turns and hand over after each, except the last warpgroup
// after its last; the last hands warpgroup 0 its first turn (the constructor). So every barrier
// sees as many arrivals as syncs, and no bar.arrive can run a barrier's count past one
// generation: warpgroup g - 1 hands over again only a whole round later, after g's sync.
template <int kGroups = 2>
struct Turns {
  static constexpr int kTurnThreads = 256;
  int group;

  __device__ explicit Turns(int g) : group(g) {
    if (group == kGroups - 1) hand_over();
  }
  __device__ void take() const { named_barrier_sync(kTurnBarrier + group, kTurnThreads); }
  __device__ void hand_over() const {
    named_barrier_arrive(kTurnBarrier + (group + 1) % kGroups, kTurnThreads);
  }
  // After a warpgroup's turn; `last`: it takes no more.
  __device__ void hand_over_after(bool last) const {
    if (group != kGroups - 1 || !last) hand_over();
  }
};

// A pipelined kernel's CTA of kCtaRows query rows: the row pass's grid ((T / kCtaRows tiles,
// longest first; B * Hq)), the consumer warpgroups first, then the producer; the key tiles of
// kKeys keys up to the one holding the CTA's last row, and a consumer thread's two rows
// (accumulator registers 4c + 2r + (0, 1) are row r). The warpgroup index and lane stay the
// kernel's own locals: held in this struct they led ptxas to treat the epilogue's shuffles as
// possibly divergent (a second copy of the epilogue behind BRA.DIV).
template <int kKeys, int kCtaRows = kRows>
struct PipelineCta {
  int b, h, kvh, row0, n_tiles;

  __device__ explicit PipelineCta(const Problem& p)
      : b(blockIdx.y / p.Hq),
        h(blockIdx.y % p.Hq),
        kvh(h / p.G),
        row0((gridDim.x - 1 - blockIdx.x) * kCtaRows),  // longest rows first
        n_tiles((min(p.T, row0 + kCtaRows) - 1) / kKeys + 1) {}

  // A consumer thread's rows: returns the first token of its warp (group_row0 = 64 g: the
  // warpgroup's rows within the CTA).
  __device__ int rows(int group_row0, int lane, int (&token)[2]) const {
    const int warp_first = row0 + group_row0 + threadIdx.x % 128 / 32 * 16;
#pragma unroll
    for (int r = 0; r < 2; ++r) token[r] = warp_first + lane / 4 + 8 * r;
    return warp_first;
  }
};

// One consumer warpgroup's walk over tiles 0 .. n - 1 in n + 1 turns, then idle_turns empty ones
// (a warpgroup whose rows end before the other's last tile still takes as many turns):
//   turn 0:          first(0)
//   turn t < n:      first(t), second(t - 1)  (two commit groups: first lands before second)
//   turn n:          second(n - 1)
// The callbacks: wait_data(t) waits for the ring data that turn t's MMAs read (the walk then
// fences it for the async proxy); start(scores) zeroes the first product's accumulators if
// `scores` and pins every register the turn's MMAs touch before wgmma.fence; issue_first(t) and
// issue_second(t) issue tile t's MMAs; on_first(t) works on first(t)'s landed results while
// second(t - 1) still runs; on_second() pins the second product's registers once it has landed
// (then the walk releases its stage); finish(t) ends tile t's register math, ready for
// second(t).
template <class Ring, int kGroups, class WaitData, class Start, class IssueFirst, class IssueSecond,
          class OnFirst, class OnSecond, class Finish>
__device__ __forceinline__ void pingpong_walk(const Ring& ring, const Turns<kGroups>& turns, int n,
                                              int idle_turns, int lane, WaitData wait_data,
                                              Start start, IssueFirst issue_first,
                                              IssueSecond issue_second, OnFirst on_first,
                                              OnSecond on_second, Finish finish) {
  wait_data(0);
  wgmma::fence_async_proxy();
  turns.take();
  start(true);
  issue_first(0);
  wgmma::commit();
  turns.hand_over();
  wgmma::wait<0>();
  on_first(0);
  finish(0);

  for (int t = 1; t < n; ++t) {
    wait_data(t);
    wgmma::fence_async_proxy();
    turns.take();
    start(true);
    issue_first(t);
    wgmma::commit();
    issue_second(t - 1);
    wgmma::commit();
    turns.hand_over();
    wgmma::wait<1>();  // first(t) (the older group) has landed; second(t - 1) may still run
    on_first(t);
    wgmma::wait<0>();
    on_second();
    ring.release(t - 1, lane);
    finish(t);
  }

  wait_data(n);
  wgmma::fence_async_proxy();
  turns.take();
  start(false);
  issue_second(n - 1);
  wgmma::commit();
  turns.hand_over_after(idle_turns == 0);
  wgmma::wait<0>();
  on_second();
  ring.release(n - 1, lane);
  for (int t = 1; t <= idle_turns; ++t) {
    turns.take();
    turns.hand_over_after(t == idle_turns);
  }
}
#endif

// Host: a row pipeline's kernel with kGroups consumer warpgroups on the row pass's grid (T /
// (64 kGroups) query tiles, B * Hq), with the call's K/V tensor maps (make_kv_maps for its kKeys)
// when its ring is loaded by the TMA: by value, as a __grid_constant__ parameter.
template <int kGroups = 2, class Kernel, class... Maps>
void launch_row_pipeline(Kernel kernel, size_t smem, const RowsArgs& a, const Problem& p,
                         cudaStream_t stream, const Maps&... maps) {
  using Split = PipelineSplit<kGroups>;
  launch_kernel(kernel, dim3((p.T + Split::kRows - 1) / Split::kRows, p.B * p.Hq), Split::kThreads,
                smem, stream, a, p, maps...);
}

}  // namespace infllm::attention::cuda::sm90
