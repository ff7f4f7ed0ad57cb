// CUDA stage 1 of InfLLM-V2, steps 1-3 (infllm_v2.h): compressed keys and block scores.
//   compress_keys_kernel  kc[b, i, g, :] = mean of k over compressed key i's tokens (once, all T)
//   score_blocks_kernel   per (128 (token, head) rows, KV group): two passes over the causal
//                         compressed keys with tensor cores. Pass 1 finds each row's log-sum-exp
//                         (exact, or sampled: SparseConfig::lse_stride); pass 2 turns scores into
//                         probabilities, sums the G heads of a token and max-pools compressed keys
//                         to blocks on chip. Only the block scores [B, chunk, Hkv, n_blocks] (f32)
//                         reach device memory; the per-token probabilities never do.
// docs/infllm_v2.md has the reasoning and the figures.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "attention/flash_attention_mma.cuh"
#include "attention/infllm_v2_stage1.cuh"
#include "attention/wgmma.cuh"
#include "core/cuda_check.h"

namespace infllm::attention::cuda {
namespace {

// A CTA's warpgroups share each compressed-key tile (the causal compressed keys stream through
// every CTA twice); two warpgroups measured faster than one or four (docs/infllm_v2.md).
constexpr int kWarpgroups = kScoreWarpgroups;
constexpr int kRows = kScoreRows;  // (token, head) rows per CTA: 16 MMA rows per warp
constexpr int kTileCkeys = 64;     // compressed keys per shared-memory tile
constexpr int kThreads = 128 * kWarpgroups;
// Pass 2's probability tile is column-major per warp, prob[warp][ckey][row % 16], so a lane (one
// compressed key) reads a token's head probabilities with 16-byte loads. The pitch of 20 floats
// keeps both the stores of a C fragment (4 columns x 8 rows per instruction) and the 16-byte loads
// of 8 consecutive compressed keys free of bank conflicts.
constexpr int kProbPitch = 20;
constexpr int kWarpProbFloats = kTileCkeys * kProbPitch;

__global__ void compress_keys_kernel(const bf16* k, bf16* kc, int T, int row, int64_t token_row,
                                     int nk, int ks, int stride) {
  // grid (nk, B); row = Hkv * D values per token (token_row elements apart in k), coalesced
  // across threads.
  const int i = blockIdx.x, b = blockIdx.y;
  const bf16* src = k + (size_t(b) * T + size_t(i) * stride) * token_row;
  for (int c = threadIdx.x; c < row; c += blockDim.x) {
    float sum = 0.f;
    for (int u = 0; u < ks; ++u) sum += __bfloat162float(src[size_t(u) * token_row + c]);
    kc[(size_t(b) * nk + i) * row + c] = __float2bfloat16(sum / float(ks));
  }
}

// The Q tile is dead once its fragments are in registers, so it shares space with the
// probability tile of pass 2.
template <int D>
struct ScoreSmem {
  static constexpr size_t q_or_prob =
      std::max<size_t>(kRows * D * 2, kThreads / 32 * kWarpProbFloats * 4);
  static constexpr size_t kc = 2 * kTileCkeys * D * 2;  // double-buffered compressed-key tiles
  static constexpr size_t carry = kRows * 4;
  static constexpr size_t bytes = q_or_prob + kc + carry;
  static_assert(q_or_prob % 1024 == 0 && kc % 2048 == 0, "wgmma panels start at 1024 bytes");
};

// Where compressed key n, column col of a [64][D] compressed-key tile lives. On Hopper the tile is
// the B operand of warpgroup MMAs (wgmma.cuh's 128B-swizzled column panels: the tensor cores read
// it once per warpgroup); elsewhere each warp loads it with ldmatrix (mma::swizzled).
template <int D>
__device__ __forceinline__ int kc_tile_offset(int n, int col) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  return wgmma::tile_offset<kTileCkeys>(n, col);
#else
  return mma::swizzled<D>(n, col);
#endif
}

// A tile of 64 compressed keys: first, first + stride, ... (stride > 1: the sampled
// normalizer of pass 1, see score_blocks_kernel).
struct CkeyTile {
  int first, stride;
};

// Copies tiles of 64 compressed keys of KV head g into [64][D] shared-memory tiles; those past nk
// are zero-filled (they are masked anyway). Thread t copies 16-byte column chunk t % chunks of keys
// t / chunks + p * rows_per_pass: the addresses that do not depend on the tile are computed once
// per CTA, so a copy costs a multiply-add.
template <int D>
struct CkeyTileCopy {
  static constexpr int chunks = D / 8, rows_per_pass = kThreads / chunks;
  static constexpr int passes = kTileCkeys / rows_per_pass;
  static_assert(kThreads % chunks == 0 && kTileCkeys % rows_per_pass == 0);
  const bf16* head;   // this thread's column of compressed key 0
  int n0, pitch, nk;  // pitch: elements from one compressed key to the next
  int dst[passes];    // element offsets in a tile

  __device__ CkeyTileCopy(const ScoreArgs& a, int b, int g)
      : head(a.kc + (size_t(b) * a.nk * a.Hkv + g) * D + (threadIdx.x % chunks) * 8),
        n0(threadIdx.x / chunks),
        pitch(a.Hkv * D),
        nk(a.nk) {
#pragma unroll
    for (int p = 0; p < passes; ++p)
      dst[p] = kc_tile_offset<D>(n0 + p * rows_per_pass, (threadIdx.x % chunks) * 8);
  }

  __device__ void load(CkeyTile tile, bf16* to) const {
#pragma unroll
    for (int p = 0; p < passes; ++p) {
      const int i = tile.first + (n0 + p * rows_per_pass) * tile.stride;
      const bool valid = i < nk;
      mma::cp_async_16(mma::smem_u32(to + dst[p]), head + (valid ? i * pitch : 0), valid);
    }
    mma::cp_async_commit();
  }
};

// acc[nt] = 16 rows of this warp x compressed keys [nt*8, nt*8+8) of the tile, raw dot products.
// All 128 threads call it together (on Hopper it is one warpgroup MMA chain).
template <int D>
__device__ void tile_dots(float (&acc)[kTileCkeys / 8][4], const uint32_t (&qa)[D / 16][4],
                          const bf16* kc_tile, int lane) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  float d[kTileCkeys / 2] = {};
  wgmma::fence();
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks)
    wgmma::mma<0, kTileCkeys>(d, qa[ks], wgmma::k_major<kTileCkeys>(kc_tile, 0, ks * 16));
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::hold(d);
#pragma unroll
  for (int nt = 0; nt < kTileCkeys / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = d[4 * nt + e];
#else
#pragma unroll
  for (int nt = 0; nt < kTileCkeys / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks)
#pragma unroll
    for (int np = 0; np < kTileCkeys / 16; ++np) {
      uint32_t b[4];
      mma::load_b_rows<D>(b, kc_tile, np * 16, ks * 16, lane);
      mma::mma_bf16(acc[2 * np], qa[ks], b[0], b[1]);
      mma::mma_bf16(acc[2 * np + 1], qa[ks], b[2], b[3]);
    }
#endif
}

// Base-2 log-sum-exp of (m, l) pairs merged; m = -inf means "empty" (l = 0).
__device__ __forceinline__ void merge_lse(float& m, float& l, float m2, float l2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;
  l = (m == -INFINITY ? 0.f : l * mma::fast_exp2(m - mx)) +
      (m2 == -INFINITY ? 0.f : l2 * mma::fast_exp2(m2 - mx));
  m = mx;
}

// Pass 1 on one tile: fold this thread's columns of its two rows, each weighted by `weight`,
// into (m, l): m the running max of the scaled base-2 scores, l the sum of weight * 2^(x - m).
// `masked`: some compressed key of the tile is not causal for some row; otherwise the compares are
// skipped.
template <bool masked>
__device__ __forceinline__ void accumulate_lse(const float (&acc)[kTileCkeys / 8][4],
                                               const int (&n_causal)[2], int col0, float c,
                                               float weight, float (&m)[2], float (&l)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    // Max and sum as trees over the 8 column pairs: a serial chain of 16 dependent FADDs would
    // leave the 4 warps per scheduler waiting on the pipeline latency.
    float part[kTileCkeys / 8];
#pragma unroll
    for (int nt = 0; nt < kTileCkeys / 8; ++nt) {
      const bool ok0 = !masked || col0 + nt * 8 < n_causal[h];
      const bool ok1 = !masked || col0 + nt * 8 + 1 < n_causal[h];
      part[nt] = fmaxf(ok0 ? acc[nt][2 * h] : -INFINITY, ok1 ? acc[nt][2 * h + 1] : -INFINITY);
    }
#pragma unroll
    for (int w = kTileCkeys / 16; w > 0; w /= 2)
#pragma unroll
      for (int i = 0; i < w; ++i) part[i] = fmaxf(part[i], part[i + w]);
    if (part[0] == -INFINITY) continue;
    // Online softmax against the running max: one rescale of l per tile (m = -inf at first:
    // exp2(-inf) = 0 and l = 0).
    const float m_new = fmaxf(m[h], part[0] * c);
#pragma unroll
    for (int nt = 0; nt < kTileCkeys / 8; ++nt) {
      const bool ok0 = !masked || col0 + nt * 8 < n_causal[h];
      const bool ok1 = !masked || col0 + nt * 8 + 1 < n_causal[h];
      part[nt] = (ok0 ? mma::fast_exp2(fmaf(acc[nt][2 * h], c, -m_new)) : 0.f) +
                 (ok1 ? mma::fast_exp2(fmaf(acc[nt][2 * h + 1], c, -m_new)) : 0.f);
    }
#pragma unroll
    for (int w = kTileCkeys / 16; w > 0; w /= 2)
#pragma unroll
      for (int i = 0; i < w; ++i) part[i] += part[i + w];
    l[h] = fmaf(l[h], mma::fast_exp2(m[h] - m_new), weight * part[0]);
    m[h] = m_new;
  }
}

// Pass 2 on one tile: p = exp2(x - lse) (0 where not causal) into this warp's column-major tile.
// fold: the thread's two rows (lane / 4 and lane / 4 + 8) are heads of one token (RowLayout), so
// it stores their sum at row lane / 4 and the token's sum reads G/2 rows instead of G.
template <bool masked>
__device__ __forceinline__ void store_probabilities(const float (&acc)[kTileCkeys / 8][4],
                                                    const int (&n_causal)[2], const float (&lse)[2],
                                                    int col0, float c, bool fold, int lane,
                                                    float* warp_prob) {
#pragma unroll
  for (int nt = 0; nt < kTileCkeys / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float p[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        p[h] = mma::fast_exp2(fmaf(acc[nt][2 * h + e], c, -lse[h]));
        if (masked && col0 + nt * 8 + e >= n_causal[h]) p[h] = 0.f;
      }
      float* dst = warp_prob + (nt * 8 + (lane % 4) * 2 + e) * kProbPitch + lane / 4;
      if (fold) {
        dst[0] = p[0] + p[1];
      } else {
        dst[0] = p[0];
        dst[8] = p[1];
      }
    }
}

// Sum over stored rows [row, row + count) of compressed-key column col (rows numbered across the
// CTA's warps). When G divides 16 a token's stored rows are consecutive rows of one warp, aligned
// to their count; with 4 or 8 of them (folded G = 8 or 16) the sum is one or two 16-byte loads.
// Otherwise rows may straddle warps: one load per row.
__device__ __forceinline__ float head_sum(const float* prob, int row, int count, int col,
                                          bool warp_local) {
  auto at = [&](int r) { return prob + (r >> 4) * kWarpProbFloats + col * kProbPitch + (r & 15); };
  if (warp_local && count >= 4) {  // count is 4 or 8
    float4 v = *reinterpret_cast<const float4*>(at(row));
    if (count == 8) {
      const float4 w = *reinterpret_cast<const float4*>(at(row) + 4);
      v.x += w.x, v.y += w.y, v.z += w.z, v.w += w.w;
    }
    return (v.x + v.y) + (v.z + v.w);
  }
  float part[4] = {0.f, 0.f, 0.f, 0.f};  // 4 independent chains, not one of length count
  for (int h = 0; h < count; h += 4)
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (h + u < count) part[u] += *at(row + h + u);
  return (part[0] + part[1]) + (part[2] + part[3]);
}

// The (CTA-local token, head in group) of a row (16 rows per warp). Natural: row = token * G +
// head. Folded (G even and dividing 16): a warp's 16 rows hold its 16 / G tokens; token tau's
// heads 0 .. G/2 - 1 sit in rows (G/2) tau .. of the warp's top 8 rows and heads G/2 .. G - 1 eight
// rows below, so the two accumulator rows of a thread (lane / 4 and lane / 4 + 8) are heads of
// one token (see store_probabilities). G = 16 folded is the natural layout.
struct RowLayout {
  int G;
  bool fold;
  __device__ int token(int row) const {
    return fold ? row / 16 * (16 / G) + row % 8 / (G / 2) : row / G;
  }
  __device__ int head(int row) const {
    return fold ? row % 8 % (G / 2) + row % 16 / 8 * (G / 2) : row % G;
  }
};

// Pooling compressed keys to blocks: lane l holds compressed key l of a 32-key half, in block
// l / r of that half (r, the compressed keys per block, is a power of two: shifts, not divisions).
struct BlockPooling {
  int r, blocks_per_half, lane_block;
  bool block_start;  // the lane holds its block's first compressed key
};

// One token's block scores from pass 2's probability tile `tile`: s[i] = the sum over the token's
// G heads (stored rows first_row .. + head_rows, head_sum; lane = compressed key within a 32-key
// half), then the block max over compressed keys [r*j - 1, r*j + r - 1] by shuffles: a log-step
// max over the block's own r keys plus the key just before it (the previous half's or tile's
// last: `before`, carried in lane 0). Compressed keys from n_tok on are not causal for the token.
// Writes blocks first_block + j < n_blocks of token_scores (j within the tile).
__device__ __forceinline__ void pool_token_tile(const float* prob, int first_row, int head_rows,
                                                bool warp_local, int tile, int n_tok,
                                                const BlockPooling& pool, float* token_scores,
                                                int first_block, int n_blocks, int lane,
                                                float& before) {
  const int r = pool.r;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int col = half * 32 + lane;
    const float s = tile * kTileCkeys + col < n_tok
                        ? head_sum(prob, first_row, head_rows, col, warp_local)
                        : -INFINITY;
    float best = s;
    // Blocks of up to 4 compressed keys (the default: 4) in two unconditional shuffles (no
    // divergence checks); larger blocks continue in a loop.
#pragma unroll
    for (int w = 1; w < 4; w *= 2) {
      const float other = __shfl_down_sync(~0u, best, w);
      best = fmaxf(best, w < r ? other : -INFINITY);
    }
    for (int w = 4; w < r; w *= 2) best = fmaxf(best, __shfl_down_sync(~0u, best, w));
    const float prev = __shfl_up_sync(~0u, s, 1);
    best = fmaxf(best, lane == 0 ? before : prev);
    before = __shfl_sync(~0u, s, 31);
    const int j = half * pool.blocks_per_half + pool.lane_block;  // within the tile
    if (pool.block_start && first_block + j < n_blocks) token_scores[j] = best;
  }
}

// Grid (token tiles of the chunk, Hkv, B); the heaviest (latest) tiles start first.
// Rows: RowLayout. When G divides 16 every token's rows belong to one warp, which then sums and
// pools its own tokens after __syncwarp; otherwise tokens straddle warps and the whole CTA
// synchronizes.
// Occupancy: at D = 64 three CTAs per SM (80 registers, ~120 bytes spilled) hide more latency than
// two; at D = 128 three need 172 bytes of spills and run slower, so it keeps two
// (docs/infllm_v2.md has both measurements).
template <int D>
__global__ void __launch_bounds__(kThreads, D == 64 ? 3 : 2)
    score_blocks_kernel(const ScoreArgs a) {
  extern __shared__ __align__(1024) unsigned char smem[];  // wgmma tiles: 1024-byte panels
  bf16* q_tile = reinterpret_cast<bf16*>(smem);  // [64][D], dead once fragments are loaded
  float* prob = reinterpret_cast<float*>(smem);  // [warps][kTileCkeys][kProbPitch]: p of the tile
  bf16* kc_tiles = reinterpret_cast<bf16*>(smem + ScoreSmem<D>::q_or_prob);
  float* carry = reinterpret_cast<float*>(smem + ScoreSmem<D>::q_or_prob + ScoreSmem<D>::kc);

  const int g = blockIdx.y, b = blockIdx.z, G = a.G, tq = a.tokens_per_cta;
  // CTAs never straddle a stripe; the latest stripes go first.
  const int x = gridDim.x - 1 - blockIdx.x, ctas_per_stripe = (kStripe + tq - 1) / tq;
  const int local0 = x / ctas_per_stripe * kStripe + x % ctas_per_stripe * tq;
  const int t0 = a.chunk.token(local0);
  if (t0 >= a.T) return;  // the last stripe's tail
  const int t_end = min(min(t0 + tq, t0 - local0 % kStripe + kStripe), a.T);  // exclusive
  const int tokens = t_end - t0;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const SparseConfig& cfg = a.cfg;
  const int r = cfg.kernels_per_block(), blocks_per_tile = kTileCkeys / r;
  const float c = a.scale_log2;
  const RowLayout rows{G, G % 2 == 0 && 16 % G == 0};

  constexpr int chunks = D / 8;
  for (int i = threadIdx.x; i < kRows * chunks; i += kThreads) {
    const int row = i / chunks, col = (i % chunks) * 8, token = rows.token(row), t = t0 + token;
    const bool valid = token < tq && t < t_end;
    const bf16* src =
        a.q + (size_t(b) * a.T + (valid ? t : 0)) * a.q_row + (g * G + rows.head(row)) * D + col;
    mma::cp_async_16(mma::smem_u32(q_tile + mma::swizzled<D>(row, col)), src, valid);
  }
  mma::cp_async_commit();
  const CkeyTileCopy<D> kc_copy(a, b, g);
  kc_copy.load(CkeyTile{0, 1}, kc_tiles);
  if (threadIdx.x < kRows) carry[threadIdx.x] = -INFINITY;  // block 0 has no compressed key -1
  mma::cp_async_wait<0>();
  __syncthreads();
  uint32_t qa[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) mma::load_a<D>(qa[ks], q_tile, warp * 16, ks * 16, lane);

  // This thread's two C-fragment rows and how many compressed keys each may see.
  const int row0 = warp * 16 + lane / 4;
  int n_causal[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int token = rows.token(row0 + h * 8), t = t0 + token;
    n_causal[h] = (token < tq && t < t_end) ? num_kernels(cfg, t + 1) : 0;
  }
  // The tokens this warp sums and pools: its own rows' tokens, or every 4th token.
  const bool warp_local = 16 % G == 0;
  const int tok_begin = warp_local ? warp * 16 / G : warp;
  const int tok_end = warp_local ? min((warp + 1) * 16 / G, tokens) : tokens;
  const int tok_step = warp_local ? 1 : kThreads / 32;
  const bool fold = rows.fold;  // see store_probabilities
  // Token tok's scores row starts at scores0 + tok * token_pitch.
  const int r_shift = __ffs(r) - 1;
  const BlockPooling pool{r, 32 >> r_shift, lane >> r_shift, (lane & (r - 1)) == 0};
  const size_t token_pitch = size_t(a.Hkv) * a.n_blocks;
  float* scores0 = a.scores + ((size_t(b) * a.chunk.len + local0) * a.Hkv + g) * a.n_blocks;

  // Pass 1's tiles. Exact (lse_stride 1): every causal compressed key. Sampled (lse_stride n > 1):
  // tile 0 (attention sinks), then keys [64, far_end) every n-th with weight n, then every key
  // from far_end on: at least the local window, where peaked attention concentrates. far_end is
  // at most n_min - window keys, so the sampled tiles are causal for every row.
  const int n_min = num_kernels(cfg, t0 + 1), n_max = num_kernels(cfg, t_end);
  const int n = cfg.lse_stride, span = kTileCkeys * n;
  const int window_ckeys = cfg.window_size / cfg.kernel_stride;
  const int sampled_tiles = n > 1 ? max(0, n_min - kTileCkeys - window_ckeys) / span : 0;
  const int far_end = kTileCkeys + sampled_tiles * span;
  const int tiles_exact = (n_max + kTileCkeys - 1) / kTileCkeys;
  const int tiles_lse =
      sampled_tiles == 0 ? tiles_exact : 1 + sampled_tiles + tiles_exact - far_end / kTileCkeys;
  // Pass 2 stops at the last tile holding a block that some token may choose: the local window's
  // blocks are forced, their scores are never read.
  const int last_free = (t_end - 1) / cfg.block_size - cfg.local_blocks();
  const int tiles_pool = last_free >= cfg.init_blocks ? last_free / blocks_per_tile + 1 : 0;
  auto step_tile = [&](int step) {
    if (step >= tiles_lse) return CkeyTile{(step - tiles_lse) * kTileCkeys, 1};  // pass 2
    if (step == 0 || sampled_tiles == 0) return CkeyTile{step * kTileCkeys, 1};
    if (step <= sampled_tiles) return CkeyTile{kTileCkeys + (step - 1) * span, n};
    return CkeyTile{far_end + (step - 1 - sampled_tiles) * kTileCkeys, 1};
  };
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int step = 0; step < tiles_lse + tiles_pool; ++step) {
    const bool pass1 = step < tiles_lse;
    const CkeyTile ckeys = step_tile(step);
    const int tile = ckeys.first / kTileCkeys;  // pass 2: stride 1, tiles in order
    if (step == tiles_lse) {  // pass 1 done: each row's lse is the merge over its quad
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int off = 1; off < 4; off *= 2)
          merge_lse(m[h], l[h], __shfl_xor_sync(~0u, m[h], off), __shfl_xor_sync(~0u, l[h], off));
        m[h] = l[h] > 0.f ? m[h] + log2f(l[h]) : INFINITY;  // no compressed keys: every p is 0
      }
    }
    mma::cp_async_wait<0>();
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    wgmma::fence_async_proxy();  // the tile's copies before the tensor cores read it
#endif
    __syncthreads();  // tile `step` landed; every thread is done with step - 1's buffers
    if (step + 1 < tiles_lse + tiles_pool)
      kc_copy.load(step_tile(step + 1), kc_tiles + ((step + 1) & 1) * kTileCkeys * D);
    float acc[kTileCkeys / 8][4];
    tile_dots<D>(acc, qa, kc_tiles + (step & 1) * kTileCkeys * D, lane);

    const int col0 = ckeys.first + (lane % 4) * 2;  // masked tiles have stride 1
    const bool full = ckeys.first + (kTileCkeys - 1) * ckeys.stride < n_min;  // all causal
    if (pass1) {
      const float weight = float(ckeys.stride);
      if (full)
        accumulate_lse<false>(acc, n_causal, col0, c, weight, m, l);
      else
        accumulate_lse<true>(acc, n_causal, col0, c, weight, m, l);
      continue;
    }
    float* warp_prob = prob + warp * kWarpProbFloats;
    if (full)
      store_probabilities<false>(acc, n_causal, m, col0, c, fold, lane, warp_prob);
    else
      store_probabilities<true>(acc, n_causal, m, col0, c, fold, lane, warp_prob);
    if (warp_local)
      __syncwarp();
    else
      __syncthreads();

    float* tile_scores = scores0 + tile * blocks_per_tile;
    for (int tok = tok_begin; tok < tok_end; tok += tok_step) {
      int n_tok = kTileCkeys * (tile + 1);  // a full tile is causal for every token
      if (!full) n_tok = num_kernels(cfg, t0 + tok + 1);
      const int first_row = fold ? warp * 16 + (tok - tok_begin) * (G / 2) : tok * G;
      const int head_rows = fold ? G / 2 : G;
      float before = lane == 0 ? carry[tok] : 0.f;  // only lane 0 uses (and rewrites) it
      pool_token_tile(prob, first_row, head_rows, warp_local, tile, n_tok, pool,
                      tile_scores + size_t(tok) * token_pitch, tile * blocks_per_tile, a.n_blocks,
                      lane, before);
      if (lane == 0) carry[tok] = before;  // the same lane of the same warp reads it next tile
    }
  }
}

}  // namespace

void launch_compress_keys(const bf16* k, bf16* kc, int B, int T, int Hkv, int D, int64_t token_row,
                          int nk, int span, int stride, cudaStream_t stream) {
  compress_keys_kernel<<<dim3(nk, B), 128, 0, stream>>>(k, kc, T, Hkv * D, token_row, nk, span,
                                                        stride);
  CUDA_CHECK_LAUNCH();
}

void launch_block_scores(int D, const ScoreArgs& a, int B, cudaStream_t stream) {
  auto launch = [&](auto kernel, size_t smem) {
    CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const int ctas_per_stripe = (kStripe + a.tokens_per_cta - 1) / a.tokens_per_cta;
    const dim3 grid(a.chunk.len / kStripe * ctas_per_stripe, a.Hkv, B);
    kernel<<<grid, kThreads, smem, stream>>>(a);
    CUDA_CHECK_LAUNCH();
  };
  if (D == 64)
    launch(score_blocks_kernel<64>, ScoreSmem<64>::bytes);
  else
    launch(score_blocks_kernel<128>, ScoreSmem<128>::bytes);
}

}  // namespace infllm::attention::cuda
