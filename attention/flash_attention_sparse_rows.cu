// Portable sparse rows kernel (flash_attention_rows.cuh): the forward (O, lse) or the dQ pass of
// block-sparse attention with mma.sync, token-major. It runs on GPUs without the Hopper kernels,
// and on Hopper reruns the sparse forward when a far score could have overflowed the Hopper
// forward's sums (RowsArgs::run_if).
//
// A CTA owns 8 consecutive tokens of one KV group; warp w's 16 rows are the G heads of token
// t0 + w. The CTA walks the ascending UNION of its 8 tokens' block lists: each KV block is loaded
// into shared memory once and used by every warp whose token selected it (neighbouring tokens
// share the local window and the first block, so this loads far fewer blocks than one walk per
// token). Built for Hopper with D = 128, the blocks that all 4 token warps of a warpgroup chose
// run as warpgroup MMAs (wgmma.cuh), which read K and V from shared memory once for 64 rows.
#include <cuda_runtime.h>

#include "attention/flash_attention_passes.h"
#include "attention/flash_attention_rows.cuh"
#include "core/cuda_check.h"
#include "core/error.h"

namespace infllm::attention::cuda::portable {
namespace {

// ---------------------------------------------------------------------------------------------
// Sparse schedule of one rows-kernel CTA: the ascending union of its 8 tokens' block lists, and
// for each warp the positions in that union of the blocks its token selected (ascending; -1 for
// padding and future blocks), and for each union entry which warps consume it.
struct SparseSchedule {
  int* entries;    // [kRowWarps][max_blocks] union positions, per warp
  int* blocks;     // [n] the union, ascending block indices
  int* consumers;  // [n] bit w: warp w's token selected the block
  int* count;      // n
  int* bitmap;     // [ceil(nblocks / 32)] scratch
  __device__ SparseSchedule(int* base, int max_blocks)
      : entries(base),
        blocks(base + kRowWarps * max_blocks),
        consumers(blocks + kRowWarps * max_blocks),
        count(consumers + kRowWarps * max_blocks),
        bitmap(count + 1) {}
  static constexpr size_t ints(int max_blocks, int nblocks) {
    return size_t(3) * kRowWarps * max_blocks + 1 + (nblocks + 31) / 32;
  }
};

template <int kThreads>
__device__ int build_sparse_schedule(const Problem& p, int b, int g, int token0,
                                     const SparseSchedule& s) {
  const int nwords = (p.nblocks + 31) / 32, n_lists = kRowWarps * p.max_blocks;
  for (int i = threadIdx.x; i < nwords; i += kThreads) s.bitmap[i] = 0;
  for (int i = threadIdx.x; i < n_lists; i += kThreads) s.consumers[i] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < n_lists; i += kThreads) {
    const int t = token0 + i / p.max_blocks;
    int blk = -1;
    if (t < p.T) {
      blk = p.blocks[((size_t(b) * p.T + t) * p.Hkv + g) * p.max_blocks + i % p.max_blocks];
      if (blk > t / kTile) blk = -1;  // future blocks are fully masked: skip them
    }
    s.entries[i] = blk;
    if (blk >= 0) atomicOr(reinterpret_cast<unsigned*>(&s.bitmap[blk >> 5]), 1u << (blk & 31));
  }
  __syncthreads();
  if (threadIdx.x < 32) {  // warp 0 compacts the bitmap in ascending order
    const int lane = threadIdx.x;
    int total = 0;
    for (int base = 0; base < nwords; base += 32) {
      uint32_t word = base + lane < nwords ? uint32_t(s.bitmap[base + lane]) : 0u;
      const int bits = __popc(word);
      int inclusive = bits;
      for (int off = 1; off < 32; off *= 2) {
        const int x = __shfl_up_sync(0xffffffffu, inclusive, off);
        if (lane >= off) inclusive += x;
      }
      int pos = total + inclusive - bits;
      while (word) {
        s.blocks[pos++] = (base + lane) * 32 + __ffs(word) - 1;
        word &= word - 1;
      }
      total += __shfl_sync(0xffffffffu, inclusive, 31);
    }
    if (lane == 0) *s.count = total;
  }
  __syncthreads();
  const int n = *s.count;
  for (int i = threadIdx.x; i < n_lists; i += kThreads) {
    const int blk = s.entries[i];
    if (blk < 0) continue;
    const int at = lower_bound_index(s.blocks, n, blk);  // the union holds blk
    s.entries[i] = at;
    atomicOr(&s.consumers[at], 1 << (i / p.max_blocks));
  }
  __syncthreads();
  return n;
}

// The CTA's 8 warps (tokens) select different blocks, so a block loaded for one warp would idle
// the other 7 at a __syncthreads. Instead the union list streams through a ring of slots that the
// warps consume independently: a ninth, producer warp copies entry j into slot j % kStages
// (cp.async completing mbarrier full[slot]) and records j as the slot's entry. Only the warps
// whose token chose the block wait for it, use it and arrive on empty[slot]; the producer arrives
// for the others, so a random block (one consumer) frees its slot as soon as that one warp is
// done, not when the slowest of the 8 has walked past it. The producer refills the slot with entry
// j + kStages once empty[slot] completes.
template <int D, bool kBackward>
__global__ void __launch_bounds__(rows_threads<D, true, kBackward>(),
                                  rows_ctas_per_sm<D, true, kBackward>())
    sparse_rows_kernel(RowsArgs a, Problem p) {
  constexpr int kM = row_tiles<D, true, kBackward>();  // m16 tiles per warp (1)
  constexpr int kThreads = rows_threads<D, true, kBackward>();
  constexpr int kStages = rows_stages<D, true, kBackward>();
  constexpr bool kWarpgroupMma = rows_warpgroup_mma<D, true, kBackward>();
  constexpr int kKvPanels = kWarpgroupMma ? kTile : 0;  // K/V slots in wgmma's tile layout
  if constexpr (!kBackward)
    if (a.run_if != nullptr && *a.run_if == 0) return;  // the Hopper forward's sums are right
  extern __shared__ __align__(128) unsigned char smem_raw[];
  unsigned char* smem =
      smem_raw + (rows_smem_align<true>() ? (1024 - (smem_u32(smem_raw) & 1023)) & 1023 : 0);
  bf16* kv_stages = reinterpret_cast<bf16*>(smem + query_tiles_bytes<D, true, kBackward>());
  constexpr bool kQueryInRegisters = query_in_registers<true, kBackward>();
  // [128][D] each; Q in slot 0 until the warps have their fragments if they keep them.
  bf16* q_tile = kQueryInRegisters ? kv_stages : reinterpret_cast<bf16*>(smem);
  bf16* do_tile = reinterpret_cast<bf16*>(smem) + kRowsPerCta * D;          // backward
  auto k_stage = [&](int s) { return kv_stages + s * 2 * kTile * D; };      // [64][D]
  auto v_stage = [&](int s) { return k_stage(s) + kTile * D; };             // [64][D]
  uint64_t* slot_full = reinterpret_cast<uint64_t*>(k_stage(kStages));      // [kStages]
  uint64_t* slot_empty = slot_full + kStages;                               // [kStages]
  volatile int* slot_entry = reinterpret_cast<int*>(slot_empty + kStages);  // [kStages]
  const SparseSchedule schedule(reinterpret_cast<int*>(slot_empty + kStages) + kStages,
                                p.max_blocks);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  QueryRows<true> rows;
  rows.b = blockIdx.y / p.Hkv;
  const int kvh = blockIdx.y % p.Hkv;
  rows.head0 = kvh * p.G;
  rows.token0 = blockIdx.x * kRowWarps;
  load_query_rows<D, kThreads>(q_tile, a.q, p.q_heads, rows, p);
  if constexpr (kBackward) load_query_rows<D, kThreads>(do_tile, a.dout, p.o_heads, rows, p);
  cp_async_commit();

  // This warp's rows: the G heads of token warp_first.
  const int warp_row0 = warp * 16 * kM;
  const int warp_first = rows.token0 + warp;
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

  // Q in registers: loaded once slot 0 holds it, see below.
  uint32_t q_frags[kQueryInRegisters ? D / 16 : 1][4];
  auto query_fragment = [&](uint32_t(&x)[4], int m, int kk) {
    if constexpr (kQueryInRegisters) {
#pragma unroll
      for (int i = 0; i < 4; ++i) x[i] = q_frags[kk][i];
    } else {
      load_a<D>(x, q_tile, warp_row0 + 16 * m, kk * 16, lane);
    }
  };
  // The warpgroup MMAs' A operand: this warp's Q fragments.
  static_assert(!kWarpgroupMma || kQueryInRegisters);
  auto query_operand = [&](int kk) { return &q_frags[kk]; };
  auto dout_fragment = [&](uint32_t(&x)[4], int m, int kk) {
    load_a<D>(x, do_tile, warp_row0 + 16 * m, kk * 16, lane);
  };
  // One KV tile for this warp's rows: forward online softmax and O += P V, or backward dQ.
  auto consume = [&](const bf16* k_tile, const bf16* v_tile, int tile, bool warpgroup) {
    consume_tile<D, kBackward, kWarpgroupMma, kKvPanels>(
        acc, row_max, row_sum, row_lse2, row_delta, row_token, query_fragment, query_operand,
        dout_fragment, k_tile, v_tile, tile, warpgroup, warp_first, lane, p);
  };

  const int n_entries = build_sparse_schedule<kThreads>(p, rows.b, kvh, rows.token0, schedule);
  if (threadIdx.x < kStages) {
    mbarrier_init(&slot_full[threadIdx.x], 32);  // one arrival per lane of the producer
    mbarrier_init(&slot_empty[threadIdx.x], kRowWarps);
    slot_entry[threadIdx.x] = -1;
  }
  cp_async_wait<0>();  // the query rows
  __syncthreads();
  if constexpr (kQueryInRegisters) {
    if (warp < kRowWarps) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) load_a<D>(q_frags[kk], q_tile, warp_row0, kk * 16, lane);
    }
    __syncthreads();  // slot 0 is free for K/V
  }
  if (warp == kRowWarps) {  // the producer
    for (int j = 0; j < n_entries; ++j) {
      const int slot = j % kStages;
      if (j >= kStages) mbarrier_wait(&slot_empty[slot], (j / kStages - 1) & 1);
      if (lane == 0) slot_entry[slot] = j;
      load_kv_tile<D, 32, kKvPanels>(k_stage(slot), a.k, rows.b, kvh, schedule.blocks[j], p, lane);
      load_kv_tile<D, 32, kKvPanels>(v_stage(slot), a.v, rows.b, kvh, schedule.blocks[j], p, lane);
      cp_async_arrive(&slot_full[slot]);
      if (lane == 0)  // stand-in arrivals for the warps that skip entry j
        for (int w = __popc(schedule.consumers[j]); w < kRowWarps; ++w)
          mbarrier_arrive(&slot_empty[slot]);
    }
    return;
  }
  const int* my_entries = schedule.entries + warp * p.max_blocks;
  const int group_warps = 15 << (warp / 4 * 4);  // this warp's warpgroup
  for (int i = 0; i < p.max_blocks; ++i) {
    const int j = my_entries[i], slot = j % kStages;
    if (j < 0) continue;
    // The slot may still hold an older entry, whose full[] phase has the same parity as entry j's
    // one round later: wait until the producer has claimed the slot for j.
    while (slot_entry[slot] != j) __nanosleep(64);
    mbarrier_wait(&slot_full[slot], (j / kStages) & 1);
    // The same in every lane: a shuffle tells ptxas so (it serializes wgmmas otherwise).
    const bool warpgroup =
        kWarpgroupMma &&
        __shfl_sync(0xffffffffu, (schedule.consumers[j] & group_warps) == group_warps, 0);
    if constexpr (kWarpgroupMma) {
      if (warpgroup) {
        // The producer's cp.async writes, seen through the mbarrier, ordered before the tensor
        // cores' reads; then the warpgroup meets to issue its MMAs together.
        wgmma::fence_async_proxy();
        asm volatile("bar.sync %0, 128;\n" ::"r"(1 + warp / 4) : "memory");
      }
    }
    consume(k_stage(slot), v_stage(slot), schedule.blocks[j], warpgroup);
    __syncwarp();
    if (lane == 0) mbarrier_arrive(&slot_empty[slot]);  // release: this warp's reads are done
  }
  store_rows<D, true, kBackward>(a, p, rows, acc, row_max, row_sum, row_token, row_valid, warp_row0,
                                 lane);
}

template <int D, bool kBackward>
void launch_sparse_rows(const char* op, const RowsArgs& a, const Problem& p, cudaStream_t stream) {
  const size_t smem = rows_tiles_smem<D, true, kBackward>() +
                      SparseSchedule::ints(p.max_blocks, p.nblocks) * sizeof(int);
  check_rows_smem(op, smem);
  auto kernel = sparse_rows_kernel<D, kBackward>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid((p.T + kRowWarps - 1) / kRowWarps, p.B * p.Hkv);
  kernel<<<grid, rows_threads<D, true, kBackward>(), smem, stream>>>(a, p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void sparse_rows(const char* op, bool backward, int D, const RowsArgs& a, const Problem& p,
                 cudaStream_t stream) {
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    if (backward)
      launch_sparse_rows<kD, true>(op, a, p, stream);
    else
      launch_sparse_rows<kD, false>(op, a, p, stream);
  });
}

}  // namespace infllm::attention::cuda::portable
