// CUDA flash attention (bf16 in/out, f32 accumulation): dense causal and InfLLM-V2 block-sparse
// schedules over one kernel family (DESIGN.md section 3).
//
// Two kernels do all the matrix work; each CTA owns a set of rows and walks a list of tiles:
//  * attention_rows_kernel: rows are queries (8 warps x 16 rows), the walk is over 64-key KV
//    tiles. Forward: online softmax, O and lse. Backward (kBackward): recomputes P from lse and
//    accumulates dQ = dS K in registers.
//      dense:  128 consecutive tokens of one head; KV tiles 0 .. the diagonal.
//      sparse: 8 consecutive tokens of one KV group, warp w's 16 rows = the G heads of token
//              t0+w (rows >= G are padding). The CTA walks the UNION of its 8 tokens' block
//              lists; each KV block is loaded into shared memory once and used by every warp
//              whose token selected it (neighbouring tokens share the local window and the
//              first block, so this loads far fewer blocks than one walk per token).
//  * attention_dkdv_kernel: rows are keys (4 warps x 16 keys = one 64-key tile), the walk is
//    over 64-row query tiles; dK and dV stay in registers.
//      dense:  the query tiles at and after the diagonal, for the heads of the group (split
//              over CTAs when there are too few KV tiles to fill the GPU; partial sums then
//              go to f32 scratch and one reduce kernel adds them in a fixed order).
//      sparse: the tokens that selected this block, from a transposed index (block -> tokens)
//              built on the GPU by sorting (group, block, token) keys, so that every block's
//              token list is ascending. Each 64-row query tile packs 64/G tokens x G heads.
//              Long lists are cut into chunks (one CTA each, f32 atomic sums), and the CTAs
//              run in the order of their chunks' first tokens, so that the ~32 blocks whose
//              local window holds a token read its Q/dO rows at about the same time (L2 hits).
// On Hopper (sm90::available()) every pass runs the warpgroup-MMA versions in
// flash_attention_sm90.cu; these kernels serve other GPUs and, rarely, the sparse forward: the
// Hopper one sums far blocks relative to a reference maximum and reruns here when a score could
// overflow that (sparse_forward_hopper). Compiled for Hopper with D = 128, the sparse forward here
// runs the blocks that all 4 token warps of a warpgroup chose (the first block, the local window)
// as warpgroup MMAs (wgmma.cuh), which read K and V from shared memory once for the 64 rows.
// Here dQ gets its own pass instead of FlashAttention-2's atomic adds from the dK/dV kernel:
// deterministic, at the price of recomputing S and dP (7 instead of 5 tile matmuls). The Hopper
// sparse backward adds dQ from its dK/dV pass instead: with per-token block lists a token-major
// dQ pass copies a whole K/V block per (token, block) pair, where the block-major pass gathers
// only the token's Q and dO rows (fwd+bwd at 128K: 190.2 -> 163.8 ms on an H100).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cub/cub.cuh>

#include <algorithm>
#include <type_traits>

#include "attention/flash_attention.h"
#include "attention/flash_attention_mma.cuh"
#include "attention/flash_attention_problem.cuh"
#include "attention/flash_attention_sm90.h"
#include "attention/wgmma.cuh"
#include "core/cuda_check.h"
#include "core/error.h"

namespace infllm::attention::cuda {
namespace {

using namespace infllm::attention::mma;

constexpr int kRowsPerCta = 128;  // rows kernel: query rows per CTA
constexpr int kRowWarps = 8;      // sparse rows kernel: 8 warps x the G heads of one token
constexpr int kKeyWarps = 4;      // dK/dV kernel: 4 warps x 16 keys
constexpr int kKeyThreads = kKeyWarps * 32;

// ---------------------------------------------------------------------------------------------
// Loads into shared memory (cp.async, 16 bytes per thread per step, zero-filled out of range).

// Which (token, head) each of the rows kernel's 128 rows is (see the file comment).
template <bool kSparse>
struct QueryRows {
  int b, head0, token0;
  __device__ int token(int row) const { return kSparse ? token0 + row / 16 : token0 + row; }
  __device__ int head(int row) const { return kSparse ? head0 + row % 16 : head0; }
  __device__ bool valid(int row, const Problem& p) const {
    return token(row) < p.T && (!kSparse || row % 16 < p.G);
  }
};

// A [128, D] tile of a [B, T, Hq, D] tensor (q or dout, tokens `row_heads` heads apart), rows
// picked by `rows`.
template <int D, int kThreads, bool kSparse>
__device__ void load_query_rows(bf16* tile, const bf16* src, int row_heads,
                                const QueryRows<kSparse>& rows, const Problem& p) {
  constexpr int kChunks = D / 8;
  for (int i = threadIdx.x; i < kRowsPerCta * kChunks; i += kThreads) {
    const int row = i / kChunks, chunk = i % kChunks;
    const bool valid = rows.valid(row, p);
    const bf16* from =
        src + (valid ? ((size_t(rows.b) * p.T + rows.token(row)) * row_heads + rows.head(row)) * D +
                           chunk * 8
                     : 0);
    cp_async_16(smem_u32(tile + swizzled<D>(row, chunk * 8)), from, valid);
  }
}

// KV tile `tile` (keys tile*64 .. +63) of KV head kvh from a [B, T, Hkv, D] tensor, copied by
// kThreads threads of which this is number `id`. Each thread keeps one 16-byte column chunk and
// steps down the rows, so the loop is one pointer increment per copy.
template <int D, int kThreads, int kPanelRows = 0>
__device__ void load_kv_tile(bf16* dst, const bf16* src, int b, int kvh, int tile, const Problem& p,
                             int id) {
  constexpr int kChunks = D / 8, kRowsPerStep = kThreads / kChunks;
  static_assert(kThreads % kChunks == 0 && kTile % kRowsPerStep == 0);
  const int chunk = id % kChunks, row0 = id / kChunks;
  const bf16* from =
      src + ((size_t(b) * p.T + tile * kTile + row0) * p.kv_heads + kvh) * D + chunk * 8;
  const size_t step = size_t(kRowsPerStep) * p.kv_heads * D;
#pragma unroll
  for (int i = 0; i < kTile / kRowsPerStep; ++i) {
    const int row = row0 + i * kRowsPerStep;
    const bool valid = tile * kTile + row < p.T;
    cp_async_16(smem_u32(dst + swizzled<D, kPanelRows>(row, chunk * 8)),
                valid ? from + i * step : src, valid);
  }
}

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

// ---------------------------------------------------------------------------------------------
// Rows kernel: forward (O, lse) or backward dQ, dense or sparse.

// m16 row tiles per warp. Two tiles (32 rows) share every K/V fragment loaded from shared memory,
// halving the ldmatrix traffic per MMA. The D=128 dQ pass has no registers for a second tile, and
// sparse warps hold one token's G heads, so those stay at one.
template <int D, bool kSparse, bool kBackward>
constexpr int row_tiles() {
  if (kSparse) return 1;
  return kBackward && D == 128 ? 1 : 2;
}
// Sparse CTAs add one producer warp that only copies K/V blocks.
template <int D, bool kSparse, bool kBackward>
constexpr int rows_threads() {
  return (kRowsPerCta / (16 * row_tiles<D, kSparse, kBackward>()) + (kSparse ? 1 : 0)) * 32;
}
// The dense kernels run 8 warps per SM: two 4-warp CTAs or one 8-warp CTA (dQ with one tile per
// warp needs its registers). Sparse CTAs hold 8 token warps and a deep K/V ring: one per SM.
template <int D, bool kSparse, bool kBackward>
constexpr int rows_ctas_per_sm() {
  return !kSparse && row_tiles<D, kSparse, kBackward>() == 2 ? 2 : 1;
}

// Sparse forward warps keep their Q fragments in registers, so the Q tile only passes through
// K/V slot 0 at the start and the slot ring gets its space (one more block in flight). The sparse
// dQ pass has no registers to spare: 9 warps per CTA cap it at 168 per thread.
template <bool kSparse, bool kBackward>
constexpr bool query_in_registers() {
  return kSparse && !kBackward;
}
// Shared memory ahead of the K/V stages: the query rows (unless in registers), the dO rows
// (backward).
template <int D, bool kSparse, bool kBackward>
constexpr size_t query_tiles_bytes() {
  return size_t((query_in_registers<kSparse, kBackward>() ? 0 : 1) + (kBackward ? 1 : 0)) *
         kRowsPerCta * D * sizeof(bf16);
}
constexpr size_t kv_stage_bytes(int D) {
  return size_t(2) * kTile * D * sizeof(bf16);
}

// K/V tiles in flight. Dense: a ring refilled at a __syncthreads per tile; the forward keeps two
// CTAs per SM, so two stages; the dQ pass runs one CTA per SM anyway, so a third costs no
// occupancy. Sparse: as many slots as fit in ~200 KB next to the query rows (at most 8).
template <int D, bool kSparse, bool kBackward>
constexpr int rows_stages() {
  if (!kSparse) return kBackward ? 3 : 2;
  const size_t slots =
      (200 * 1024 - query_tiles_bytes<D, kSparse, kBackward>()) / kv_stage_bytes(D);
  return slots < 8 ? int(slots) : 8;
}

// Sparse tiles start at 1024-byte boundaries (wgmma's swizzle): 1024 bytes of room to round the
// shared-memory base up.
template <bool kSparse>
constexpr size_t rows_smem_align() {
  return kSparse ? 1024 : 0;
}

template <int D, bool kSparse, bool kBackward>
constexpr size_t rows_tiles_smem() {
  constexpr int kStages = rows_stages<D, kSparse, kBackward>();
  return rows_smem_align<kSparse>() + query_tiles_bytes<D, kSparse, kBackward>() +
         kStages * kv_stage_bytes(D) +
         (kSparse ? kStages * (2 * sizeof(uint64_t) + sizeof(int)) : 0);  // slot barriers, owners
}

// The rows kernel's two tile products for a warp's kM m16 row tiles; each B fragment loaded from
// shared memory feeds kM MMAs.
// c += X Y^T: X = the warp's 16 kM rows of Q or dO, whose A fragment for row tile m and k-step kk
// x_fragment(xa, m, kk) provides (from shared memory or registers); Y = a [64][D] KV tile.
template <int D, int kPanelRows, int kM, class XFragment>
__device__ __forceinline__ void rows_times_tile_t(float (&c)[kM][8][4], XFragment x_fragment,
                                                  const bf16* y_tile, int lane) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t xa[kM][4];
#pragma unroll
    for (int m = 0; m < kM; ++m) x_fragment(xa[m], m, kk);
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      uint32_t yb[4];
      load_b_rows<D, kPanelRows>(yb, y_tile, np * 16, kk * 16, lane);
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        mma_bf16(c[m][2 * np], xa[m], yb[0], yb[1]);
        mma_bf16(c[m][2 * np + 1], xa[m], yb[2], yb[3]);
      }
    }
  }
}

// acc += W Y: W = the warp's [16 kM][64] accumulator (P or dS, rounded to bf16), Y = a [64][D]
// KV tile.
template <int D, int kPanelRows, int kM>
__device__ __forceinline__ void rows_times_tile(float (&acc)[kM][D / 8][4],
                                                const float (&w)[kM][8][4], const bf16* y_tile,
                                                int lane) {
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    uint32_t wa[kM][4];
#pragma unroll
    for (int m = 0; m < kM; ++m) c_to_a(wa[m], w[m][2 * ks], w[m][2 * ks + 1]);
#pragma unroll
    for (int dt = 0; dt < D / 16; ++dt) {
      uint32_t yb[4];
      load_b_cols<D, kPanelRows>(yb, y_tile, ks * 16, dt * 16, lane);
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        mma_bf16(acc[m][2 * dt], wa[m], yb[0], yb[1]);
        mma_bf16(acc[m][2 * dt + 1], wa[m], yb[2], yb[3]);
      }
    }
  }
}

// Hopper, sparse rows: the tile products of rows_times_tile_t / rows_times_tile as warpgroup MMAs
// over the 64 rows (4 tokens x 16 heads) of a warpgroup whose 4 tokens all chose the K/V block.
// Accumulators are m16n8 tiles in a row (wgmma's layout).
// c += X Y^T: x_operand(kk) points to this warp's A fragment of X's k-step kk.
template <int D, class XOperand>
__device__ __forceinline__ void warpgroup_times_tile_t(float (&c)[32], XOperand x_operand,
                                                       const bf16* y_tile) {
  wgmma::hold(c);  // the zeros must be in the registers before the fence
  wgmma::fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wgmma::mma<0, kTile>(c, *x_operand(kk), wgmma::k_major<kTile>(y_tile, 0, kk * 16));
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::hold(c);
}
// acc += W Y: W = P ([64][64] over the warpgroup), Y = V as an MN-major operand.
template <int D>
__device__ __forceinline__ void warpgroup_times_tile(float (&acc)[D / 2], const float (&w)[32],
                                                     const bf16* y_tile) {
  uint32_t a[kTile / 16][4];
#pragma unroll
  for (int ks = 0; ks < kTile / 16; ++ks) wgmma::accumulator_to_a(a[ks], w, ks);
  wgmma::registers_times_tile<D, kTile>(acc, a, y_tile);
}

// c = X Y^T and acc += W Y for a warp's rows (rows_times_tile_t / rows_times_tile), as warpgroup
// MMAs when `warpgroup` says that the whole warpgroup runs this tile (kWarpgroupMma builds only).
template <int D, bool kWarpgroupMma, int kKvPanels, int kM, class XFragment, class XOperand>
__device__ __forceinline__ void times_tile_t(float (&c)[kM][8][4], XFragment x_fragment,
                                             XOperand x_operand, const bf16* y, bool warpgroup,
                                             int lane) {
  if constexpr (kWarpgroupMma) {
    if (warpgroup) {
      warpgroup_times_tile_t<D>(reinterpret_cast<float(&)[32]>(c[0][0][0]), x_operand, y);
      return;
    }
  }
  rows_times_tile_t<D, kKvPanels>(c, x_fragment, y, lane);
}
template <int D, bool kWarpgroupMma, int kKvPanels, int kM>
__device__ __forceinline__ void times_tile(float (&acc)[kM][D / 8][4], const float (&w)[kM][8][4],
                                           const bf16* y, bool warpgroup, int lane) {
  if constexpr (kWarpgroupMma) {
    if (warpgroup) {
      warpgroup_times_tile<D>(reinterpret_cast<float(&)[D / 2]>(acc[0][0][0]),
                              reinterpret_cast<const float(&)[32]>(w[0][0][0]), y);
      return;
    }
  }
  rows_times_tile<D, kKvPanels>(acc, w, y, lane);
}

// Dense rows: each CTA walks KV tiles 0 .. its diagonal in order; a tile is loaded by all threads
// into a ring of kStages and consumed by every warp between two __syncthreads.
//
// Sparse rows: the CTA's 8 warps (tokens) select different blocks, so a block loaded for one warp
// would idle the other 7 at a __syncthreads. Instead the union list streams through a ring of
// slots that the warps consume independently: a ninth, producer warp copies entry j into slot
// j % kStages (cp.async completing mbarrier full[slot]) and records j as the slot's entry. Only
// the warps whose token chose the block wait for it, use it and arrive on empty[slot]; the
// producer arrives for the others, so a random block (one consumer) frees its slot as soon as
// that one warp is done, not when the slowest of the 8 has walked past it. The producer refills
// the slot with entry j + kStages once empty[slot] completes.
template <int D, bool kSparse, bool kBackward>
__global__ void __launch_bounds__(rows_threads<D, kSparse, kBackward>(),
                                  rows_ctas_per_sm<D, kSparse, kBackward>())
    attention_rows_kernel(RowsArgs a, Problem p) {
  constexpr int kM = row_tiles<D, kSparse, kBackward>();  // m16 tiles per warp
  constexpr int kThreads = rows_threads<D, kSparse, kBackward>();
  constexpr int kStages = rows_stages<D, kSparse, kBackward>();
  // Hopper, D = 128, sparse forward: shared blocks as warpgroup MMAs (file comment). D = 64
  // measured slower that way (19.2 vs 18.3 ms sparse forward at 64K, Hq = 16); the sparse dQ
  // comes from sm90's dK/dV pass there.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kWarpgroupMma = kSparse && D == 128 && !kBackward;
#else
  constexpr bool kWarpgroupMma = false;
#endif
  constexpr int kKvPanels = kWarpgroupMma ? kTile : 0;  // K/V slots in wgmma's tile layout
  if constexpr (kSparse && !kBackward)
    if (a.run_if != nullptr && *a.run_if == 0) return;  // the Hopper forward's sums are right
  extern __shared__ __align__(128) unsigned char smem_raw[];
  unsigned char* smem =
      smem_raw + (rows_smem_align<kSparse>() ? (1024 - (smem_u32(smem_raw) & 1023)) & 1023 : 0);
  bf16* kv_stages = reinterpret_cast<bf16*>(smem + query_tiles_bytes<D, kSparse, kBackward>());
  constexpr bool kQueryInRegisters = query_in_registers<kSparse, kBackward>();
  // [128][D] each; Q in slot 0 until the warps have their fragments if they keep them.
  bf16* q_tile = kQueryInRegisters ? kv_stages : reinterpret_cast<bf16*>(smem);
  bf16* do_tile = reinterpret_cast<bf16*>(smem) + kRowsPerCta * D;          // backward
  auto k_stage = [&](int s) { return kv_stages + s * 2 * kTile * D; };      // [64][D]
  auto v_stage = [&](int s) { return k_stage(s) + kTile * D; };             // [64][D]
  uint64_t* slot_full = reinterpret_cast<uint64_t*>(k_stage(kStages));      // sparse: [kStages]
  uint64_t* slot_empty = slot_full + kStages;                               // sparse: [kStages]
  volatile int* slot_entry = reinterpret_cast<int*>(slot_empty + kStages);  // sparse: [kStages]
  const SparseSchedule schedule(reinterpret_cast<int*>(slot_empty + kStages) + kStages,
                                p.max_blocks);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  QueryRows<kSparse> rows;
  int kvh;
  if constexpr (kSparse) {
    rows.b = blockIdx.y / p.Hkv;
    kvh = blockIdx.y % p.Hkv;
    rows.head0 = kvh * p.G;
    rows.token0 = blockIdx.x * kRowWarps;
  } else {
    rows.b = blockIdx.y / p.Hq;
    rows.head0 = blockIdx.y % p.Hq;
    kvh = rows.head0 / p.G;
    rows.token0 = (gridDim.x - 1 - blockIdx.x) * kRowsPerCta;  // longest rows first
  }
  load_query_rows<D, kThreads>(q_tile, a.q, p.q_heads, rows, p);
  if constexpr (kBackward) load_query_rows<D, kThreads>(do_tile, a.dout, p.o_heads, rows, p);
  cp_async_commit();

  // This warp's rows: warp_row0 .. +16*kM-1 of the CTA. Dense: consecutive tokens; sparse: the
  // heads of one token.
  const int warp_row0 = warp * 16 * kM;
  const int warp_first = kSparse ? rows.token0 + warp : rows.token0 + warp_row0;
  const int warp_last = kSparse ? warp_first : warp_first + 16 * kM - 1;
  const bool warp_active = warp_first < p.T;
  // The thread holds rows warp_row0 + 16 m + lane/4 + 8 e, for e = 0, 1: index r = 2 m + e.
  auto thread_row = [&](int r) { return warp_row0 + 16 * (r / 2) + lane / 4 + 8 * (r % 2); };
  int row_token[2 * kM];
  bool row_valid[2 * kM];
  float acc[kM][D / 8][4] = {};               // forward: unnormalized O; backward: dQ
  float row_max[2 * kM], row_sum[2 * kM];     // forward, base-2 units
  float row_lse2[2 * kM], row_delta[2 * kM];  // backward
#pragma unroll
  for (int r = 0; r < 2 * kM; ++r) {
    row_token[r] = rows.token(thread_row(r));
    row_valid[r] = rows.valid(thread_row(r), p);
    row_max[r] = -INFINITY;
    row_sum[r] = 0.f;
    if constexpr (kBackward) {
      const size_t idx = (size_t(rows.b) * p.Hq + rows.head(thread_row(r))) * p.T + row_token[r];
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
    // S = Q K^T for this warp's 16 kM rows x 64 keys.
    float s[kM][8][4] = {};
    times_tile_t<D, kWarpgroupMma, kKvPanels>(s, query_fragment, query_operand, k_tile, warpgroup,
                                              lane);
    // Causal mask, only where some key of the tile is after some row of the warp.
    if (tile * kTile + kTile - 1 > warp_first) {
#pragma unroll
      for (int m = 0; m < kM; ++m)
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = tile * kTile + nt * 8 + (lane % 4) * 2 + (e & 1);
            if (key > row_token[2 * m + (e >> 1)]) s[m][nt][e] = -INFINITY;
          }
    }

    if constexpr (!kBackward) {
      // Online softmax: rescale the running sums to the new row maximum.
#pragma unroll
      for (int r = 0; r < 2 * kM; ++r) {
        const int m = r / 2, e = r % 2;
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) mx = fmaxf(mx, fmaxf(s[m][nt][2 * e], s[m][nt][2 * e + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float new_max = fmaxf(row_max[r], mx * p.scale_log2);
        const float base = new_max == -INFINITY ? 0.f : new_max;  // fully masked row so far
        const float correction = fast_exp2(row_max[r] - base);
        row_max[r] = new_max;
        row_sum[r] *= correction;
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) {
          acc[m][dt][2 * e] *= correction;
          acc[m][dt][2 * e + 1] *= correction;
        }
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            float& x = s[m][nt][2 * e + j];
            x = fast_exp2(fmaf(x, p.scale_log2, -base));
            row_sum[r] += x;
          }
      }
      times_tile<D, kWarpgroupMma, kKvPanels>(acc, s, v_tile, warpgroup, lane);  // O += P V
    } else {
      // P from the saved lse; dP = dO V^T; dS = P (dP - delta); dQ += dS K.
      float dp[kM][8][4] = {};
      rows_times_tile_t<D, kKvPanels>(dp, dout_fragment, v_tile, lane);
#pragma unroll
      for (int m = 0; m < kM; ++m)
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = 2 * m + (e >> 1);
            const float prob = fast_exp2(fmaf(s[m][nt][e], p.scale_log2, -row_lse2[r]));
            dp[m][nt][e] = prob * (dp[m][nt][e] - row_delta[r]);
          }
      rows_times_tile<D, kKvPanels>(acc, dp, k_tile, lane);  // dQ += dS K
    }
  };

  if constexpr (kSparse) {
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
        for (int kk = 0; kk < D / 16; ++kk)
          load_a<D>(q_frags[kk], q_tile, warp_row0, kk * 16, lane);
      }
      __syncthreads();  // slot 0 is free for K/V
    }
    if (warp == kRowWarps) {  // the producer
      for (int j = 0; j < n_entries; ++j) {
        const int slot = j % kStages;
        if (j >= kStages) mbarrier_wait(&slot_empty[slot], (j / kStages - 1) & 1);
        if (lane == 0) slot_entry[slot] = j;
        load_kv_tile<D, 32, kKvPanels>(k_stage(slot), a.k, rows.b, kvh, schedule.blocks[j], p,
                                       lane);
        load_kv_tile<D, 32, kKvPanels>(v_stage(slot), a.v, rows.b, kvh, schedule.blocks[j], p,
                                       lane);
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
      // The slot may still hold an older entry, whose full[] phase has the same parity as
      // entry j's one round later: wait until the producer has claimed the slot for j.
      while (slot_entry[slot] != j) __nanosleep(64);
      mbarrier_wait(&slot_full[slot], (j / kStages) & 1);
      // The same in every lane: a shuffle tells ptxas so (it serializes wgmmas otherwise).
      const bool warpgroup =
          kWarpgroupMma &&
          __shfl_sync(0xffffffffu, (schedule.consumers[j] & group_warps) == group_warps, 0);
      if constexpr (kWarpgroupMma) {
        if (warpgroup) {
          // The producer's cp.async writes, seen through the mbarrier, ordered before the
          // tensor cores' reads; then the warpgroup meets to issue its MMAs together.
          wgmma::fence_async_proxy();
          asm volatile("bar.sync %0, 128;\n" ::"r"(1 + warp / 4) : "memory");
        }
      }
      consume(k_stage(slot), v_stage(slot), schedule.blocks[j], warpgroup);
      __syncwarp();
      if (lane == 0) mbarrier_arrive(&slot_empty[slot]);  // release: this warp's reads are done
    }
  } else {
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
        consume(k_stage(i % kStages), v_stage(i % kStages), i, false);
      __syncthreads();  // everyone is done with this stage before it is refilled
    }
  }

  // Epilogue: each thread writes its rows' 2-element pieces.
  bf16* dst = kBackward ? a.dq : a.out;
#pragma unroll
  for (int r = 0; r < 2 * kM; ++r) {
    const int m = r / 2, e = r % 2;
    float row_scale = p.scale;  // backward: dQ = scale * dS K
    if constexpr (!kBackward) {
      row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
      row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
      row_scale = row_sum[r] > 0.f ? 1.f / row_sum[r] : 0.f;
    }
    if (!row_valid[r]) continue;
    const int head = rows.head(thread_row(r));
    bf16* row_ptr =
        dst +
        ((size_t(rows.b) * p.T + row_token[r]) * (kBackward ? p.q_heads : p.o_heads) + head) * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      *reinterpret_cast<uint32_t*>(row_ptr + dt * 8 + (lane % 4) * 2) =
          pack_bf16(acc[m][dt][2 * e] * row_scale, acc[m][dt][2 * e + 1] * row_scale);
    if constexpr (!kBackward) {
      if (lane % 4 == 0)
        a.lse_out[(size_t(rows.b) * p.Hq + head) * p.T + row_token[r]] =
            row_sum[r] > 0.f ? (row_max[r] + log2f(row_sum[r])) * kLn2 : -INFINITY;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// dK/dV kernel.

// dK/dV kernel shape per head dim: queries (columns of S^T) held in registers at once, and CTAs
// per SM. The kernel is bound by latency, not throughput (few eligible warps per scheduler), so
// D=64 trades the chunk width for a third CTA per SM; measured on bench200m's attention shape
// (docs/attention_kernels.md).
template <int D>
constexpr int dkdv_query_chunk() {
  return D == 64 ? 16 : 32;
}
template <int D>
constexpr int dkdv_ctas_per_sm() {
  return D == 64 ? 3 : 2;
}
constexpr int kQueryStages = 2;  // query tiles in flight

template <int D>
constexpr size_t dkdv_smem() {
  return size_t(2 + 2 * kQueryStages) * kTile * D * sizeof(bf16) +
         size_t(kQueryStages) * kTile * (2 * sizeof(float) + sizeof(int));
}

template <int D, bool kSparse>
__global__ void __launch_bounds__(kKeyThreads, dkdv_ctas_per_sm<D>())
    attention_dkdv_kernel(KvArgs a, Problem p) {
  constexpr int kStages = kQueryStages;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* k_tile = reinterpret_cast<bf16*>(smem);                             // [64][D]
  bf16* v_tile = k_tile + kTile * D;                                        // [64][D]
  bf16* q_tiles = v_tile + kTile * D;                                       // [kStages][64][D]
  bf16* do_tiles = q_tiles + kStages * kTile * D;                           // [kStages][64][D]
  float* lse_s = reinterpret_cast<float*>(do_tiles + kStages * kTile * D);  // [kStages][64]
  float* delta_s = lse_s + kStages * kTile;                                 // [kStages][64]
  int* token_s = reinterpret_cast<int*>(delta_s + kStages * kTile);  // [kStages][64], -1 = padding

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // The query tiles this CTA walks.
  SparseKeyWalk walk = {};
  if constexpr (kSparse) {
    walk = SparseKeyWalk(a.index, p, blockIdx.x);
    if (walk.idle) return;
  }
  const int tile = kSparse ? walk.block : blockIdx.x;
  const int b = kSparse ? walk.b : blockIdx.y / p.Hkv,
            kvh = kSparse ? walk.kvh : blockIdx.y % p.Hkv;
  int n_qtiles = walk.n_qtiles, head_begin = 0, qtiles_per_head = 0;
  if constexpr (!kSparse) {
    const int heads = p.G / a.splits;
    head_begin = kvh * p.G + blockIdx.z * heads;
    qtiles_per_head = p.nblocks - tile;  // query tiles at and after the diagonal
    n_qtiles = heads * qtiles_per_head;
  }
  auto query_row = [&](int n, int row) {
    if constexpr (kSparse) return walk.row(walk.tile_entries(a.index, n), p, n, row);
    QueryTileRow r;
    r.head = head_begin + n / qtiles_per_head;
    r.token = (tile + n % qtiles_per_head) * kTile + row;
    r.valid = r.token < p.T;
    return r;
  };
  // Each thread keeps one 16-byte column chunk and steps down the rows: one row lookup per
  // row instead of one per chunk.
  auto load_query_tile = [&](int n, int stage) {
    constexpr int kChunks = D / 8, kRowsPerStep = kKeyThreads / kChunks;
    const int chunk = threadIdx.x % kChunks, row0 = threadIdx.x / kChunks;
    bf16* q_dst = q_tiles + stage * kTile * D;
    bf16* do_dst = do_tiles + stage * kTile * D;
#pragma unroll
    for (int i = 0; i < kTile / kRowsPerStep; ++i) {
      const int row = row0 + i * kRowsPerStep;
      const QueryTileRow r = query_row(n, row);
      const size_t token = size_t(b) * p.T + r.token;
      const int dst = swizzled<D>(row, chunk * 8);
      cp_async_16(smem_u32(q_dst + dst),
                  a.q + (r.valid ? (token * p.q_heads + r.head) * D + chunk * 8 : 0), r.valid);
      cp_async_16(smem_u32(do_dst + dst),
                  a.dout + (r.valid ? (token * p.o_heads + r.head) * D + chunk * 8 : 0), r.valid);
    }
    if (threadIdx.x < kTile) {
      const int row = threadIdx.x;
      const QueryTileRow r = query_row(n, row);
      const size_t idx = r.valid ? (size_t(b) * p.Hq + r.head) * p.T + r.token : 0;
      cp_async_4(lse_s + stage * kTile + row, a.lse + idx, r.valid);
      cp_async_4(delta_s + stage * kTile + row, a.delta + idx, r.valid);
      token_s[stage * kTile + row] = r.valid ? r.token : -1;  // -1 masks every key
    }
  };

  load_kv_tile<D, kKeyThreads>(k_tile, a.k, b, kvh, tile, p, threadIdx.x);
  load_kv_tile<D, kKeyThreads>(v_tile, a.v, b, kvh, tile, p, threadIdx.x);
  // Query tile j goes to stage j % kStages in commit group j (group 0 also holds K and V).
  auto load_stage = [&](int j) {
    if (j < n_qtiles) load_query_tile(j, j % kStages);
    cp_async_commit();  // possibly empty: keeps one group per tile index
  };
  for (int j = 0; j < kStages - 1; ++j) load_stage(j);

  // This thread's two keys: rows lane/4 and lane/4 + 8 of the warp's 16.
  const int key0 = tile * kTile + warp * 16 + lane / 4;
  float dk[D / 8][4] = {}, dv[D / 8][4] = {};
  // The warp's K and V A-fragments never change during the walk. With D=64 they fit in registers
  // (32), which halves the ldmatrix traffic of S^T and dP^T; with D=128 they are reloaded.
  constexpr bool kKeyFragmentsInRegisters = D == 64;
  constexpr int kQueryChunk = dkdv_query_chunk<D>();
  uint32_t key_frags[kKeyFragmentsInRegisters ? D / 16 : 1][2][4];
  for (int n = 0; n < n_qtiles; ++n) {
    const int stage = n % kStages;
    load_stage(n + kStages - 1);  // into the stage that iteration n-1 finished with
    cp_async_wait<kStages - 1>();
    __syncthreads();
    if constexpr (kKeyFragmentsInRegisters) {
      if (n == 0) {  // K and V landed with query tile 0
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          load_a<D>(key_frags[kk][0], k_tile, warp * 16, kk * 16, lane);
          load_a<D>(key_frags[kk][1], v_tile, warp * 16, kk * 16, lane);
        }
      }
    }
    const bf16* q_tile = q_tiles + stage * kTile * D;
    const bf16* do_tile = do_tiles + stage * kTile * D;
    const float* lse_t = lse_s + stage * kTile;
    const float* delta_t = delta_s + stage * kTile;
    const int* token_t = token_s + stage * kTile;

    for (int c = 0; c < kTile / kQueryChunk; ++c) {
      constexpr int kNt = kQueryChunk / 8;  // n-tiles of queries in the chunk
      // S^T = K Q^T and dP^T = V dO^T for 16 keys x 32 queries.
      float st[kNt][4] = {}, dpt[kNt][4] = {};
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t ka[4], va[4];
        if constexpr (kKeyFragmentsInRegisters) {
          for (int i = 0; i < 4; ++i) {
            ka[i] = key_frags[kk][0][i];
            va[i] = key_frags[kk][1][i];
          }
        } else {
          load_a<D>(ka, k_tile, warp * 16, kk * 16, lane);
          load_a<D>(va, v_tile, warp * 16, kk * 16, lane);
        }
        for (int np = 0; np < kNt / 2; ++np) {
          uint32_t qb[4], dob[4];
          load_b_rows<D>(qb, q_tile, c * kQueryChunk + np * 16, kk * 16, lane);
          mma_bf16(st[2 * np], ka, qb[0], qb[1]);
          mma_bf16(st[2 * np + 1], ka, qb[2], qb[3]);
          load_b_rows<D>(dob, do_tile, c * kQueryChunk + np * 16, kk * 16, lane);
          mma_bf16(dpt[2 * np], va, dob[0], dob[1]);
          mma_bf16(dpt[2 * np + 1], va, dob[2], dob[3]);
        }
      }
      // P^T from the saved lse (causal: key <= token; padding rows have token -1).
      for (int nt = 0; nt < kNt; ++nt)
        for (int e = 0; e < 4; ++e) {
          const int col = c * kQueryChunk + nt * 8 + (lane % 4) * 2 + (e & 1);
          const int key = key0 + 8 * (e >> 1);
          const float prob =
              key <= token_t[col] ? fast_exp2(st[nt][e] * p.scale_log2 - lse_t[col] * kLog2e) : 0.f;
          st[nt][e] = prob;
          dpt[nt][e] = prob * (dpt[nt][e] - delta_t[col]);  // dS^T
        }
      // dV += P^T dO, dK += dS^T Q (the k dimension is the chunk's 32 queries).
      for (int ks = 0; ks < kNt / 2; ++ks) {
        uint32_t pa[4], dsa[4];
        c_to_a(pa, st[2 * ks], st[2 * ks + 1]);
        c_to_a(dsa, dpt[2 * ks], dpt[2 * ks + 1]);
        for (int dt = 0; dt < D / 16; ++dt) {
          uint32_t dob[4], qb[4];
          load_b_cols<D>(dob, do_tile, c * kQueryChunk + ks * 16, dt * 16, lane);
          mma_bf16(dv[2 * dt], pa, dob[0], dob[1]);
          mma_bf16(dv[2 * dt + 1], pa, dob[2], dob[3]);
          load_b_cols<D>(qb, q_tile, c * kQueryChunk + ks * 16, dt * 16, lane);
          mma_bf16(dk[2 * dt], dsa, qb[0], qb[1]);
          mma_bf16(dk[2 * dt + 1], dsa, qb[2], qb[3]);
        }
      }
    }
    __syncthreads();
  }

  for (int e = 0; e < 2; ++e) {
    const int key = key0 + 8 * e;
    if (key >= p.T) continue;
    for (int dt = 0; dt < D / 8; ++dt)
      store_key_gradients<D>(a, p, b, key, kvh, dt * 8 + (lane % 4) * 2, walk.chunked,
                             dk[dt][2 * e] * p.scale, dk[dt][2 * e + 1] * p.scale, dv[dt][2 * e],
                             dv[dt][2 * e + 1]);
  }
}

// ---------------------------------------------------------------------------------------------
// Small kernels of the backward.

// delta[b, h, t] = sum_d dO * O. D/8 lanes per row, one 16-byte chunk of each tensor per lane,
// reduced by shuffles within the row's lanes: each warp reads whole rows, coalesced. With
// lse_rows set, delta is token-major ([B, T, Hq], as KvArgs for the Hopper sparse pass) and
// lse_rows gets a token-major copy of lse.
template <int D>
__global__ void attention_delta_kernel(const bf16* out, const bf16* dout, const float* lse,
                                       float* delta, float* lse_rows, Problem p) {
  constexpr int kLanes = D / 8;
  const size_t row = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) / kLanes;  // (b, t, h)
  const int chunk = threadIdx.x % kLanes;
  const bool valid = row < size_t(p.B) * p.T * p.Hq;
  float sum = 0.f;
  if (valid) {
    const uint4 o = *reinterpret_cast<const uint4*>(out + row * D + chunk * 8);
    const uint4 g = *reinterpret_cast<const uint4*>(dout + row * D + chunk * 8);
    const uint32_t ow[4] = {o.x, o.y, o.z, o.w}, gw[4] = {g.x, g.y, g.z, g.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 of = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ow[i]));
      const float2 gf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&gw[i]));
      sum += of.x * gf.x + of.y * gf.y;
    }
  }
#pragma unroll
  for (int off = kLanes / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (valid && chunk == 0) {
    const int h = int(row % p.Hq), t = int(row / p.Hq % p.T), b = int(row / p.Hq / p.T);
    const size_t head_major = (size_t(b) * p.Hq + h) * p.T + t;
    if (lse_rows != nullptr) lse_rows[row] = lse[head_major];
    delta[lse_rows != nullptr ? row : head_major] = sum;
  }
}

// One key per selected (token, group, block): (segment << entry_bits) + entry with segment =
// (b * Hkv + g) * nblocks + block and entry = the token, so sorted keys are grouped by block and
// ascending in token. -1 padding, future blocks and repeats of the previous entry become all ones
// and sort last, as do the blocks of the token's tile list when tiles.tile_blocks is set (the far
// pass of the Hopper forward). Key is uint32_t when segments and entries fit 31 bits (half the
// bytes to sort).
template <class Key>
__global__ void sparse_index_keys_kernel(Problem p, int entry_bits, SparseSums tiles, Key* keys) {
  const size_t n = size_t(p.B) * p.T * p.Hkv * p.max_blocks;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const int entry = int(i % p.max_blocks);
    const size_t list = i / p.max_blocks;  // (b, t, g)
    const int g = int(list % p.Hkv), t = int(list / p.Hkv % p.T), b = int(list / p.Hkv / p.T);
    const int blk = p.blocks[i];
    const bool selected = blk >= 0 && blk <= t / kTile && !(entry > 0 && p.blocks[i - 1] == blk);
    const bool tile_pair =
        selected && tiles.tile_blocks != nullptr && in_tile_list(tiles, p, b, t, g, blk);
    const Key segment = (Key(b) * p.Hkv + g) * p.nblocks + blk;
    keys[i] = selected && !tile_pair ? (segment << entry_bits) + Key(t) : ~Key(0);
  }
}

// tokens[i] = the entry of sorted key i.
template <class Key>
__global__ void sparse_index_tokens_kernel(const Key* keys, size_t n, int entry_bits, int* tokens) {
  const Key mask = (Key(1) << entry_bits) - 1;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    tokens[i] = keys[i] == ~Key(0) ? -1 : int(keys[i] & mask);
}

// segment_begin[s] = first sorted key >= s << entry_bits, for s = 0 .. B*Hkv*nblocks.
template <class Key>
__global__ void sparse_index_segments_kernel(const Key* keys, size_t n, int segments,
                                             int entry_bits, int* segment_begin) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s > segments) return;
  segment_begin[s] = int(lower_bound_index(keys, n, Key(s) << entry_bits));
}

// The sparse dK/dV work list. counts[s] = the CTAs (chunks) of segment s, counts[segments] = 0,
// so that an exclusive scan gives each segment's first item and the total.
__global__ void sparse_work_counts_kernel(SparseIndex index, int segments, int G, int* counts) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s > segments) return;
  const int tokens = s < segments ? index.segment_begin[s + 1] - index.segment_begin[s] : 0;
  counts[s] = s < segments ? sparse_chunks(sparse_query_tiles(tokens, G), index.chunk_tiles) : 0;
}

// One item {segment, chunk} per CTA, keyed by (b * Hkv + g, the chunk's first token). Sorted by
// that key, the CTAs that run at the same time read the same stretch of tokens: a token's Q/dO
// rows serve the ~32 blocks whose local window holds it (and block 0) from L2, where the
// block-major order streamed them from HBM once per block.
__global__ void sparse_work_items_kernel(Problem p, SparseIndex index, const int* first_item,
                                         uint64_t* keys, int2* items) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= p.B * p.Hkv * p.nblocks) return;
  const int tokens_per_chunk = kTile / p.G * index.chunk_tiles;
  const int begin = index.segment_begin[s], count = index.segment_begin[s + 1] - begin;
  const uint64_t group = uint64_t(s / p.nblocks) << 32;
  for (int c = first_item[s]; c < first_item[s + 1]; ++c) {
    const int entry = (c - first_item[s]) * tokens_per_chunk;
    const int first_token = entry < count ? index.tokens[begin + entry] : s % p.nblocks * kTile;
    keys[c] = group + uint32_t(first_token);
    items[c] = make_int2(s, c - first_item[s]);
  }
}

// dk/dv = sum over splits of the f32 partial sums ([splits, B, T, Hkv, D]), in split order.
__global__ void reduce_splits_kernel(const float* dk_part, const float* dv_part, int splits,
                                     size_t n, Problem p, int D, bf16* dk, bf16* dv) {
  const size_t token_values = size_t(p.Hkv) * D;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    float k = 0.f, v = 0.f;
    for (int s = 0; s < splits; ++s) {
      k += dk_part[s * n + i];
      v += dv_part[s * n + i];
    }
    const size_t out = i / token_values * p.kv_heads * D + i % token_values;
    dk[out] = __float2bfloat16(k);
    dv[out] = __float2bfloat16(v);
  }
}

// dk/dv rows of sparse blocks that were walked in several chunks: f32 sums -> bf16.
// One CTA of D threads per (b, key, g) row.
__global__ void finalize_chunked_kernel(const float* dk_acc, const float* dv_acc, SparseIndex index,
                                        Problem p, int D, bf16* dk, bf16* dv) {
  const size_t row = blockIdx.x;  // (b, key, g)
  const int g = int(row % p.Hkv), key = int(row / p.Hkv % p.T), b = int(row / p.Hkv / p.T);
  const int seg = (b * p.Hkv + g) * p.nblocks + key / kTile;
  const int tiles =
      sparse_query_tiles(index.segment_begin[seg + 1] - index.segment_begin[seg], p.G);
  if (sparse_chunks(tiles, index.chunk_tiles) == 1) return;  // written directly by its only chunk
  const size_t i = key_sums_offset(p, b, key, g, threadIdx.x, D);
  const size_t out = ((size_t(b) * p.T + key) * p.kv_heads + g) * D + threadIdx.x;
  dk[out] = __float2bfloat16(dk_acc[i]);
  dv[out] = __float2bfloat16(dv_acc[i]);
}

// The Hopper sparse forward's tile lists and row masks (SparseSums): one CTA per (b, 128-token
// tile, g) counts how many of the tile's tokens selected each block (in shared memory, one
// counter per causal block), keeps those at or above a cutoff (kTileBlockMinTokens, raised until
// at most kMaxTileBlocks remain; the tile's own blocks always), and sets each token's mask bits.
constexpr int kTileThreads = 256;
__global__ void __launch_bounds__(kTileThreads) tile_blocks_kernel(Problem p, SparseSums tiles) {
  extern __shared__ int block_count[];  // [n]; after the cutoff: the block's list index or -1
  __shared__ int above, listed;
  const int tile = blockIdx.x, b = blockIdx.y / p.Hkv, g = blockIdx.y % p.Hkv;
  const int t0 = tile * kTileRows, tokens = min(kTileRows, p.T - t0);
  const int own = t0 / kTile, n = min(p.nblocks, own + kTileRows / kTile);
  auto list_entry = [&](int i) {  // block of entry i of the tile's lists, -1 when not selected
    const int t = t0 + i / p.max_blocks, e = i % p.max_blocks;
    const int32_t* list = p.blocks + ((size_t(b) * p.T + t) * p.Hkv + g) * p.max_blocks;
    const int blk = list[e];
    return blk >= 0 && blk <= t / kTile && !(e > 0 && list[e - 1] == blk) ? blk : -1;
  };
  // The tile's own blocks count one more than any block can (kTileRows tokens): the cutoff
  // stops at that count at the latest, so they are always kept.
  for (int i = threadIdx.x; i < n; i += kTileThreads) block_count[i] = i >= own ? kTileRows + 1 : 0;
  __syncthreads();
  for (int i = threadIdx.x; i < tokens * p.max_blocks; i += kTileThreads) {
    const int blk = list_entry(i);
    if (blk >= 0 && blk < own) atomicAdd(&block_count[blk], 1);
  }
  int cutoff = kTileBlockMinTokens;
  for (;; ++cutoff) {
    if (threadIdx.x == 0) above = 0;
    __syncthreads();
    int mine = 0;
    for (int i = threadIdx.x; i < n; i += kTileThreads) mine += block_count[i] >= cutoff;
    if (mine) atomicAdd(&above, mine);
    __syncthreads();
    const int total = above;
    __syncthreads();  // everyone has read it before thread 0 resets it
    if (total <= kMaxTileBlocks) break;
  }
  const size_t list = tile_list_index(p, b, t0, g);
  if (threadIdx.x < 32) {  // warp 0 lists the kept blocks in ascending order
    const int lane = threadIdx.x;
    int count = 0;
    for (int base = 0; base < n; base += 32) {
      const int blk = base + lane;
      const bool keep = blk < n && block_count[blk] >= cutoff;
      const uint32_t kept = __ballot_sync(0xffffffffu, keep);
      const int index = count + __popc(kept & ((1u << lane) - 1));
      if (keep) tiles.tile_blocks[list * kMaxTileBlocks + index] = blk;
      if (blk < n) block_count[blk] = keep ? index : -1;
      count += __popc(kept);
    }
    if (lane == 0) listed = count;
  }
  __syncthreads();
  if (threadIdx.x == 0) tiles.tile_counts[list] = listed;
  for (int t = threadIdx.x; t < tokens; t += kTileThreads) {
    uint64_t mask = 0;
    for (int e = 0; e < p.max_blocks; ++e) {
      const int blk = list_entry(t * p.max_blocks + e);
      if (blk >= 0 && block_count[blk] >= 0) mask |= uint64_t(1) << block_count[blk];
    }
    tiles.row_masks[(size_t(b) * p.T + t0 + t) * p.Hkv + g] = mask;
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.

Problem make_problem(const char* op, const AttentionShape& s, const BlockList& bl) {
  check_attention_shape(op, s, bl);
  INFLLM_CHECK(s.D == 64 || s.D == 128, op, ": head dim D=", s.D,
               " is not supported by the CUDA kernels; use D=64 or D=128");
  Problem p{};
  p.B = s.B;
  p.T = s.T;
  p.Hq = s.Hq;
  p.Hkv = s.Hkv;
  p.G = s.Hq / s.Hkv;
  p.G_divisor = Divisor(p.G);
  p.nblocks = (s.T + kTile - 1) / kTile;
  p.scale = s.scale;
  p.scale_log2 = s.scale * kLog2e;
  p.blocks = bl.blocks;
  p.max_blocks = bl.max_blocks;
  INFLLM_CHECK(s.q_row % s.D == 0 && s.kv_row % s.D == 0, op, ": token strides q_row=", s.q_row,
               " and kv_row=", s.kv_row, " must be whole heads (multiples of D=", s.D, ")");
  p.q_heads = s.q_row > 0 ? int(s.q_row / s.D) : s.Hq;
  p.kv_heads = s.kv_row > 0 ? int(s.kv_row / s.D) : s.Hkv;
  p.o_heads = s.Hq;
  if (bl.blocks != nullptr) {
    INFLLM_CHECK(bl.block_size == kTile, op, ": sparse block_size=", bl.block_size,
                 " is not supported by the CUDA kernel; use block_size=64");
    INFLLM_CHECK(p.G <= 16, op, ": sparse attention packs the G=Hq/Hkv=", p.G,
                 " heads of a group into one 16-row MMA tile; use G <= 16");
  }
  return p;
}

template <int D, bool kBackward>
void launch_rows(const char* op, const RowsArgs& a, const Problem& p, cudaStream_t stream) {
  const bool sparse = p.blocks != nullptr;
  size_t smem = sparse ? rows_tiles_smem<D, true, kBackward>() +
                             SparseSchedule::ints(p.max_blocks, p.nblocks) * sizeof(int)
                       : rows_tiles_smem<D, false, kBackward>();
  int device = 0, smem_max = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  INFLLM_CHECK(smem <= size_t(smem_max), op, ": needs ", smem, " bytes of shared memory (max ",
               smem_max, "); lower max_blocks or T");
  if (sparse) {
    auto kernel = attention_rows_kernel<D, true, kBackward>;
    CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const dim3 grid((p.T + kRowWarps - 1) / kRowWarps, p.B * p.Hkv);
    kernel<<<grid, rows_threads<D, true, kBackward>(), smem, stream>>>(a, p);
  } else {
    auto kernel = attention_rows_kernel<D, false, kBackward>;
    CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const dim3 grid((p.T + kRowsPerCta - 1) / kRowsPerCta, p.B * p.Hq);
    kernel<<<grid, rows_threads<D, false, kBackward>(), smem, stream>>>(a, p);
  }
  CUDA_CHECK_LAUNCH();
}

template <int D, bool kSparse>
void launch_dkdv(const KvArgs& a, const Problem& p, cudaStream_t stream) {
  constexpr size_t smem = dkdv_smem<D>();
  auto kernel = attention_dkdv_kernel<D, kSparse>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid = kSparse ? dim3(unsigned(sparse_work_bound(p, a.index.chunk_tiles)))
                            : dim3(p.nblocks, p.B * p.Hkv, a.splits);
  kernel<<<grid, kKeyThreads, smem, stream>>>(a, p);
  CUDA_CHECK_LAUNCH();
}

template <class T>
T* scratch(size_t count, cudaStream_t stream) {
  void* ptr = nullptr;
  CUDA_CHECK(cudaMallocAsync(&ptr, std::max<size_t>(count, 1) * sizeof(T), stream));
  return static_cast<T*>(ptr);
}

// Runs a cub device algorithm the way cub expects: once to size its temporary storage, then with
// that storage (stream-ordered, freed after).
template <class Algorithm>
void run_cub(Algorithm&& algorithm, cudaStream_t stream) {
  size_t temp_bytes = 0;
  CUDA_CHECK(algorithm(nullptr, temp_bytes));
  void* temp = scratch<unsigned char>(temp_bytes, stream);
  CUDA_CHECK(algorithm(temp, temp_bytes));
  CUDA_CHECK(cudaFreeAsync(temp, stream));
}

int bits_for(uint64_t count) {  // bits that hold the values 0 .. count - 1
  int bits = 0;
  while ((uint64_t(1) << bits) < count) ++bits;
  return bits;
}

// The CTAs of the sparse dK/dV pass in the order of their chunks' first tokens (see
// sparse_work_items_kernel); unused items of the bound are idle and sort last.
int2* build_sparse_work(const Problem& p, const SparseIndex& index, cudaStream_t stream) {
  const int segments = p.B * p.Hkv * p.nblocks;
  const size_t bound = sparse_work_bound(p, index.chunk_tiles);
  int* counts = scratch<int>(segments + 1, stream);
  int* first_item = scratch<int>(segments + 1, stream);
  uint64_t* keys = scratch<uint64_t>(2 * bound, stream);
  int2* items = scratch<int2>(bound, stream);
  CUDA_CHECK(cudaMemsetAsync(keys, 0xff, bound * sizeof(uint64_t), stream));
  CUDA_CHECK(cudaMemsetAsync(items, 0xff, bound * sizeof(int2), stream));
  const int grid = (segments + 1 + 255) / 256;
  sparse_work_counts_kernel<<<grid, 256, 0, stream>>>(index, segments, p.G, counts);
  CUDA_CHECK_LAUNCH();
  run_cub(
      [&](void* temp, size_t& bytes) {
        return cub::DeviceScan::ExclusiveSum(temp, bytes, counts, first_item, segments + 1, stream);
      },
      stream);
  sparse_work_items_kernel<<<grid, 256, 0, stream>>>(p, index, first_item, keys, items);
  CUDA_CHECK_LAUNCH();
  int2* work = scratch<int2>(bound, stream);
  const int end_bit = 32 + bits_for(uint64_t(p.B) * p.Hkv);
  run_cub(
      [&](void* temp, size_t& bytes) {
        return cub::DeviceRadixSort::SortPairs(temp, bytes, keys, keys + bound, items, work, bound,
                                               0, end_bit, stream);
      },
      stream);
  for (void* ptr : {static_cast<void*>(counts), static_cast<void*>(first_item),
                    static_cast<void*>(keys), static_cast<void*>(items)})
    CUDA_CHECK(cudaFreeAsync(ptr, stream));
  return work;
}

template <class Key>
void sort_sparse_index(const Problem& p, int entry_bits, int end_bit, const SparseSums& tiles,
                       SparseIndex index, cudaStream_t stream) {
  const size_t n = size_t(p.B) * p.T * p.Hkv * p.max_blocks;
  const int segments = p.B * p.Hkv * p.nblocks;
  const int grid = int(std::min<size_t>((n + 255) / 256, 65536));
  Key* keys = scratch<Key>(n, stream);
  Key* sorted = scratch<Key>(n, stream);
  sparse_index_keys_kernel<<<grid, 256, 0, stream>>>(p, entry_bits, tiles, keys);
  CUDA_CHECK_LAUNCH();
  // Only the segment bits are sorted: the keys arrive in token order within each segment and the
  // sort is stable, so tokens stay ascending (2 radix passes instead of 4 at 64K-128K). The
  // all-ones padding still sorts last.
  run_cub(
      [&](void* temp, size_t& bytes) {
        return cub::DeviceRadixSort::SortKeys(temp, bytes, keys, sorted, n, entry_bits, end_bit,
                                              stream);
      },
      stream);
  sparse_index_segments_kernel<<<(segments + 1 + 255) / 256, 256, 0, stream>>>(
      sorted, n, segments, entry_bits, index.segment_begin);
  CUDA_CHECK_LAUNCH();
  sparse_index_tokens_kernel<<<grid, 256, 0, stream>>>(sorted, n, entry_bits, index.tokens);
  CUDA_CHECK_LAUNCH();
  for (void* ptr : {static_cast<void*>(keys), static_cast<void*>(sorted)})
    CUDA_CHECK(cudaFreeAsync(ptr, stream));
}

// The block -> tokens index of every selected block; with tiles.tile_blocks set, of those not
// in the token's tile list.
SparseIndex build_sparse_index(const Problem& p, const SparseSums& tiles, int chunk_tiles,
                               cudaStream_t stream) {
  const size_t n = size_t(p.B) * p.T * p.Hkv * p.max_blocks;
  const int segments = p.B * p.Hkv * p.nblocks;
  SparseIndex index{scratch<int>(n, stream), scratch<int>(segments + 1, stream), nullptr,
                    chunk_tiles};
  const int entry_bits = bits_for(uint64_t(p.T));
  const int end_bit = entry_bits + bits_for(uint64_t(segments) + 1);
  if (end_bit <= 31)  // the all-ones padding stays above every valid key
    sort_sparse_index<uint32_t>(p, entry_bits, end_bit, tiles, index, stream);
  else
    sort_sparse_index<uint64_t>(p, entry_bits, end_bit, tiles, index, stream);
  index.work = build_sparse_work(p, index, stream);
  return index;
}

void free_sparse_index(const SparseIndex& index, cudaStream_t stream) {
  for (void* ptr : {static_cast<void*>(index.tokens), static_cast<void*>(index.segment_begin),
                    static_cast<void*>(index.work)})
    CUDA_CHECK(cudaFreeAsync(ptr, stream));
}

void check_rows_fit_int(const char* op, const Problem& p) {
  // The row strides of q (q_heads) and dO (o_heads) may exceed Hq (a fused QKV projection).
  const size_t rows = size_t(p.B) * p.T * std::max({p.Hq, p.q_heads, p.o_heads});
  INFLLM_CHECK(rows <= size_t(INT32_MAX), op, ": B*T*heads = ", rows,
               " query rows; the Hopper sparse kernels number them in 32 bits: lower B or T");
}

// The tile lists and row masks of the Hopper sparse passes (SparseSums, tile_blocks_kernel).
void build_tile_lists(const char* op, const Problem& p, SparseSums& sums, cudaStream_t stream) {
  check_rows_fit_int(op, p);
  const int row_tiles = (p.T + kTileRows - 1) / kTileRows;
  const size_t tiles = size_t(p.B) * row_tiles * p.Hkv;
  sums.tile_blocks = scratch<int>(tiles * kMaxTileBlocks, stream);
  sums.tile_counts = scratch<int>(tiles, stream);
  sums.row_masks = scratch<uint64_t>(size_t(p.B) * p.T * p.Hkv, stream);
  const size_t count_bytes = size_t(std::min(p.nblocks, row_tiles * (kTileRows / kTile))) * 4;
  INFLLM_CHECK(count_bytes <= 200 * 1024, op, ": T=", p.T,
               " has too many blocks to count in shared memory; lower T");
  CUDA_CHECK(cudaFuncSetAttribute(tile_blocks_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  int(count_bytes)));
  tile_blocks_kernel<<<dim3(row_tiles, p.B * p.Hkv), kTileThreads, count_bytes, stream>>>(p, sums);
  CUDA_CHECK_LAUNCH();
}

void free_tile_lists(const SparseSums& sums, cudaStream_t stream) {
  for (void* ptr : {static_cast<void*>(sums.tile_blocks), static_cast<void*>(sums.tile_counts),
                    static_cast<void*>(sums.row_masks)})
    CUDA_CHECK(cudaFreeAsync(ptr, stream));
}

// Query tiles per CTA of the Hopper block-major passes: about 1 MiB of f32 query sums per chunk
// (64 tokens at Hq = 32, D = 128; 256 at Hq = 16, D = 64), so that the CTAs that run at once add
// into a stretch of sums that stays in L2. Measured on an H100 (tiles: ms), far forward: 128K,
// Hq = 32, G = 16, D = 128 32: 47.0, 16: 41.2, 8: 41.8; 64K, Hq = 16, G = 8, D = 64 32: 5.8, 16:
// 6.05, 8: 6.3. Fused dK/dV (fwd+bwd): 128K 48: 126.1, 32: 120.7, 16: 116.3; 64K D = 64 48:
// 14.0, 32: 13.9, 16: 14.3.
int sparse_chunk_tiles(const Problem& p, int D) {
  const int tokens = (1 << 20) / (p.Hq * D * int(sizeof(float)));
  return std::clamp(tokens / (kTile / p.G), 8, 64);
}

// Hopper: the tile pass starts the sums, the far pass adds the other blocks, out and lse follow
// from the sums. If a far score could have overflowed them, the portable kernel reruns the whole
// forward and overwrites both (it checks the flag on the GPU: no host round trip).
template <int D>
void sparse_forward_hopper(const char* op, RowsArgs a, const Problem& p, cudaStream_t stream) {
  const size_t rows = size_t(p.B) * p.T * p.Hq;
  SparseSums& sums = a.sums;
  build_tile_lists(op, p, sums, stream);
  sums.o_sum = scratch<float>(rows * D, stream);
  sums.row_max = scratch<float>(rows, stream);
  sums.row_sum = scratch<float>(rows, stream);
  sums.overflow = scratch<int>(1, stream);
  CUDA_CHECK(cudaMemsetAsync(sums.overflow, 0, sizeof(int), stream));
  sm90::sparse_tile_pass(D, a, p, stream);
  const FarArgs far{a.q, a.k, a.v, build_sparse_index(p, sums, sparse_chunk_tiles(p, D), stream),
                    sums};
  sm90::sparse_far_forward(D, far, p, stream);
  sm90::sums_to_output(D, sums, p, a.out, a.lse_out, stream);
  a.run_if = sums.overflow;
  launch_rows<D, false>(op, a, p, stream);
  free_sparse_index(far.index, stream);
  free_tile_lists(sums, stream);
  for (void* ptr : {static_cast<void*>(sums.o_sum), static_cast<void*>(sums.row_max),
                    static_cast<void*>(sums.row_sum), static_cast<void*>(sums.overflow)})
    CUDA_CHECK(cudaFreeAsync(ptr, stream));
}

}  // namespace

void attention_forward(const AttentionShape& shape, const bf16_bits* q, const bf16_bits* k,
                       const bf16_bits* v, BlockList blocks, bf16_bits* out, float* lse,
                       void* stream) {
  const char* op = "attention_forward (cuda)";
  const Problem p = make_problem(op, shape, blocks);
  RowsArgs a{};
  a.q = reinterpret_cast<const bf16*>(q);
  a.k = reinterpret_cast<const bf16*>(k);
  a.v = reinterpret_cast<const bf16*>(v);
  a.out = reinterpret_cast<bf16*>(out);
  a.lse_out = lse;
  const auto s = static_cast<cudaStream_t>(stream);
  const bool hopper = sm90::available();
  if (blocks.blocks == nullptr && hopper) {
    sm90::forward(shape.D, a, p, s);
    return;
  }
  with_head_dim(shape.D, [&](auto d) {
    constexpr int D = decltype(d)::value;
    if (hopper)  // sparse
      sparse_forward_hopper<D>(op, a, p, s);
    else
      launch_rows<D, false>(op, a, p, s);
  });
}

void attention_backward(const AttentionShape& shape, const bf16_bits* q, const bf16_bits* k,
                        const bf16_bits* v, const bf16_bits* out, const float* lse,
                        const bf16_bits* dout, BlockList blocks, bf16_bits* dq, bf16_bits* dk,
                        bf16_bits* dv, void* stream_ptr) {
  const char* op = "attention_backward (cuda)";
  const Problem p = make_problem(op, shape, blocks);
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const bool sparse = blocks.blocks != nullptr, hopper = sm90::available();
  const size_t rows = size_t(p.B) * p.T * p.Hq;
  float* delta = scratch<float>(rows, stream);
  // The Hopper sparse passes read lse and delta token-major (KvArgs, RowsArgs).
  float* lse_rows = sparse && hopper ? scratch<float>(rows, stream) : nullptr;

  with_head_dim(shape.D, [&](auto d) {
    constexpr int D = decltype(d)::value;
    attention_delta_kernel<D><<<int((rows * (D / 8) + 255) / 256), 256, 0, stream>>>(
        reinterpret_cast<const bf16*>(out), reinterpret_cast<const bf16*>(dout), lse, delta,
        lse_rows, p);
    CUDA_CHECK_LAUNCH();

    RowsArgs ra{};
    ra.q = reinterpret_cast<const bf16*>(q);
    ra.k = reinterpret_cast<const bf16*>(k);
    ra.v = reinterpret_cast<const bf16*>(v);
    ra.dout = reinterpret_cast<const bf16*>(dout);
    ra.lse = lse;
    ra.delta = delta;
    ra.dq = reinterpret_cast<bf16*>(dq);
    if (!sparse && hopper)
      sm90::backward_dq(D, ra, p, stream);
    else if (!hopper)  // sparse on Hopper: a tile pass and the dK/dV pass below give dQ
      launch_rows<D, true>(op, ra, p, stream);

    KvArgs ka{};
    ka.q = ra.q;
    ka.k = ra.k;
    ka.v = ra.v;
    ka.dout = ra.dout;
    ka.lse = lse_rows != nullptr ? lse_rows : lse;
    ka.delta = delta;
    ka.dk = reinterpret_cast<bf16*>(dk);
    ka.dv = reinterpret_cast<bf16*>(dv);
    ka.splits = 1;
    if (sparse) {
      // The key sums cover whole 64-key blocks (key_sums_offset).
      const size_t n = size_t(p.B) * p.nblocks * kTile * p.Hkv * D, dq_n = rows * D;
      // Hopper: the block-major dK/dV pass adds every pair's dQ into f32 query sums.
      if (hopper) {
        check_rows_fit_int(op, p);
        ka.dq_acc = scratch<float>(dq_n, stream);
        CUDA_CHECK(cudaMemsetAsync(ka.dq_acc, 0, dq_n * sizeof(float), stream));
      }
      const SparseIndex index = build_sparse_index(
          p, SparseSums{}, hopper ? sparse_chunk_tiles(p, D) : kSparseChunkTiles, stream);
      ka.index = index;
      ka.dk_acc = scratch<float>(n, stream);
      ka.dv_acc = scratch<float>(n, stream);
      CUDA_CHECK(cudaMemsetAsync(ka.dk_acc, 0, n * sizeof(float), stream));
      CUDA_CHECK(cudaMemsetAsync(ka.dv_acc, 0, n * sizeof(float), stream));
      if (hopper) {
        sm90::sparse_backward(D, ka, p, stream);
        sm90::dq_from_sums(D, ka.dq_acc, p, ra.dq, stream);
        CUDA_CHECK(cudaFreeAsync(ka.dq_acc, stream));
      } else {
        launch_dkdv<D, true>(ka, p, stream);
      }
      finalize_chunked_kernel<<<int(size_t(p.B) * p.T * p.Hkv), D, 0, stream>>>(
          ka.dk_acc, ka.dv_acc, index, p, D, ka.dk, ka.dv);
      CUDA_CHECK_LAUNCH();
      CUDA_CHECK(cudaFreeAsync(ka.dk_acc, stream));
      CUDA_CHECK(cudaFreeAsync(ka.dv_acc, stream));
      free_sparse_index(index, stream);
    } else {
      // Split the group's heads over CTAs until there are enough CTAs to fill the GPU.
      const int base = p.nblocks * p.B * p.Hkv, target = 2 * sm_count();
      while (base * ka.splits < target && p.G % (ka.splits * 2) == 0) ka.splits *= 2;
      if (hopper) ka.splits = sm90::dkdv_splits(p);
      if (ka.splits > 1) {
        const size_t n = size_t(p.B) * p.T * p.Hkv * D;
        ka.dk_part = scratch<float>(ka.splits * n, stream);
        ka.dv_part = scratch<float>(ka.splits * n, stream);
      }
      if (hopper)
        sm90::backward_dkdv(D, ka, p, stream);
      else
        launch_dkdv<D, false>(ka, p, stream);
      if (ka.splits > 1) {
        const size_t n = size_t(p.B) * p.T * p.Hkv * D;
        reduce_splits_kernel<<<int(std::min<size_t>((n + 255) / 256, 65536)), 256, 0, stream>>>(
            ka.dk_part, ka.dv_part, ka.splits, n, p, D, ka.dk, ka.dv);
        CUDA_CHECK_LAUNCH();
        CUDA_CHECK(cudaFreeAsync(ka.dk_part, stream));
        CUDA_CHECK(cudaFreeAsync(ka.dv_part, stream));
      }
    }
  });
  CUDA_CHECK(cudaFreeAsync(delta, stream));
  if (lse_rows != nullptr) CUDA_CHECK(cudaFreeAsync(lse_rows, stream));
}

}  // namespace infllm::attention::cuda
