// The portable row pass (mma.sync m16n8k16, every GPU since sm_80): a CTA owns up to 128 query
// rows and walks 64-key KV tiles, forward (online softmax, O, lse) or backward dQ (P recomputed
// from lse, dS = P (dP - delta), dQ += dS K). Two kernels run it:
//  * dense_rows_kernel (flash_attention_dense_rows.cu): 128 consecutive tokens of one head, KV
//    tiles 0 .. the diagonal, loaded by all threads into a ring refilled at a __syncthreads per
//    tile;
//  * sparse_rows_kernel (flash_attention_sparse_rows.cu): 8 consecutive tokens of one KV group,
//    warp w's 16 rows = the G heads of token t0 + w (rows >= G are padding), walking the union of
//    the 8 tokens' block lists through a ring of slots that a producer warp fills.
// This header holds what both share: which rows a CTA owns, the tile copies, the tile products
// (mma.sync, or warpgroup MMAs for the sparse forward on Hopper at D = 128) and RowsWarp, one
// warp's rows with the per-tile step and the epilogue.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "attention/flash_attention_mma.cuh"
#include "attention/flash_attention_problem.cuh"
#include "attention/wgmma.cuh"

namespace infllm::attention::cuda::portable {

using namespace infllm::attention::mma;

constexpr int kRowsPerCta = 128;  // rows kernel: query rows per CTA
constexpr int kRowWarps = 8;      // sparse rows kernel: 8 warps x the G heads of one token

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

// Hopper, D = 128, sparse forward: the blocks all 4 token warps of a warpgroup chose run as
// warpgroup MMAs. At D = 64 that measured slower (docs/attention_kernels.md); the sparse dQ on
// Hopper comes from the sm90 block-major backward.
template <int D, bool kSparse, bool kBackward>
constexpr bool rows_warpgroup_mma() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  return kSparse && D == 128 && !kBackward;
#else
  return false;
#endif
}

// A warp's rows are rows warp_row0 .. +16 kM - 1 of the CTA (dense: consecutive tokens; sparse:
// the heads of one token). The thread holds rows warp_row0 + 16 m + lane / 4 + 8 e, for e = 0, 1:
// index r = 2 m + e.
__device__ __forceinline__ int thread_row(int warp_row0, int lane, int r) {
  return warp_row0 + 16 * (r / 2) + lane / 4 + 8 * (r % 2);
}

// One KV tile for a warp's rows: forward online softmax and O += P V into acc, or backward
// dQ += dS K into acc. The warp's Q and dO rows come as A fragments (query_fragment,
// dout_fragment) or, for warpgroup MMAs (`warpgroup`, kWarpgroupMma builds only), as
// query_operand; row_token[r] is the token of thread row r, warp_first the warp's first token.
template <int D, bool kBackward, bool kWarpgroupMma, int kKvPanels, int kM, class QueryFragment,
          class QueryOperand, class DoutFragment>
__device__ __forceinline__ void consume_tile(
    float (&acc)[kM][D / 8][4], float (&row_max)[2 * kM], float (&row_sum)[2 * kM],
    const float (&row_lse2)[2 * kM], const float (&row_delta)[2 * kM],
    const int (&row_token)[2 * kM], QueryFragment query_fragment, QueryOperand query_operand,
    DoutFragment dout_fragment, const bf16* k_tile, const bf16* v_tile, int tile, bool warpgroup,
    int warp_first, int lane, const Problem& p) {
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
}

// Epilogue: each thread writes its rows' 2-element pieces of O (normalized) or dQ (scaled) and,
// forward, their lse.
template <int D, bool kSparse, bool kBackward, int kM>
__device__ __forceinline__ void store_rows(
    const RowsArgs& a, const Problem& p, const QueryRows<kSparse>& rows,
    const float (&acc)[kM][D / 8][4], const float (&row_max)[2 * kM], float (&row_sum)[2 * kM],
    const int (&row_token)[2 * kM], const bool (&row_valid)[2 * kM], int warp_row0, int lane) {
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
    const int head = rows.head(thread_row(warp_row0, lane, r));
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

}  // namespace infllm::attention::cuda::portable
