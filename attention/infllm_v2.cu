// CUDA stage 1 of InfLLM-V2: compressed keys -> block scores -> top-k block lists.
//
// Three kernels per chunk of query tokens (docs/infllm_v2.md has the reasoning and figures):
//   compress_keys_kernel      kc[b, i, g, :] = mean of k over kernel i's tokens (once, all T)
//   score_blocks_kernel       per (128 (token, head) rows, KV group): two passes over the causal
//                             compressed keys with tensor cores. Pass 1 finds each row's
//                             log-sum-exp (exact, or sampled: SparseConfig::lse_stride); pass 2
//                             turns scores into probabilities, sums the G heads of a token and
//                             max-pools kernels to blocks on chip. Only the
//                             block scores [B, chunk, Hkv, n_blocks] (f32) reach device memory.
//   select_topk_blocks_kernel one warp per (token, group): a sampled lower bound filters the
//                             keys to a few dozen candidates, a bitwise search finds the k-th
//                             largest, an ordered compaction keeps ties lowest-index-first.
// The per-token probabilities never exist in device memory; block scores are bounded by
// processing the query tokens in chunks (interleaved stripes, see Chunk) of at most
// kScoreChunkBytes.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "attention/flash_attention_mma.cuh"
#include "attention/infllm_v2.h"
#include "attention/wgmma.cuh"
#include "core/cuda_check.h"
#include "core/error.h"

namespace infllm::attention::cuda {
namespace {

using bf16 = __nv_bfloat16;

// A CTA's warpgroups share each compressed-key tile (the causal kernels stream through every CTA
// twice). Measured at 128K on an H100: 1 warpgroup 44.9 ms, 2: 41.9 ms, 4: 43.7 ms.
constexpr int kWarpgroups = 2;
constexpr int kRows = 64 * kWarpgroups;  // (token, head) rows per CTA: 16 MMA rows per warp
constexpr int kKernels = 64;             // compressed keys per shared-memory tile
constexpr int kThreads = 128 * kWarpgroups;
// Pass 2's probability tile is column-major per warp, prob[warp][kernel][row % 16], so a lane
// (one kernel) reads a token's head probabilities with 16-byte loads. The pitch of 20 floats keeps
// both the stores of a C fragment (4 columns x 8 rows per instruction) and the 16-byte loads of 8
// consecutive kernels free of bank conflicts.
constexpr int kProbPitch = 20;
constexpr int kWarpProbFloats = kKernels * kProbPitch;
constexpr size_t kScoreChunkBytes = size_t(256) << 20;

// The query tokens of one score + top-k launch pair: chunk `index` of `count` holds the stripes of
// kStripe tokens index, index + count, index + 2 count, ... Every chunk mixes early (cheap) and
// late (costly) tokens, so with the latest scheduled first a launch drains on cheap CTAs; with
// contiguous chunks each launch ended on a wave of its costliest ones.
constexpr int kStripe = 128;
struct Chunk {
  int index, count;
  int len;  // local tokens: this chunk's stripes x kStripe (the last stripe may pass T)
  __host__ __device__ int token(int local) const {
    return ((local / kStripe) * count + index) * kStripe + local % kStripe;
  }
};

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

struct ScoreArgs {
  const bf16* q;   // [B, T, Hq, D]
  const bf16* kc;  // [B, nk, Hkv, D]
  float* scores;   // [B, chunk.len, Hkv, n_blocks]
  SparseConfig cfg;
  int T, Hq, Hkv, G, nk;
  int64_t q_row;  // elements between consecutive tokens of q
  Chunk chunk;
  int n_blocks, tokens_per_cta;
  float scale_log2;  // scale * log2(e): softmax in base 2
};

// The Q tile is dead once its fragments are in registers, so it shares space with the
// probability tile of pass 2.
template <int D>
struct ScoreSmem {
  static constexpr size_t q_or_prob =
      std::max<size_t>(kRows * D * 2, kThreads / 32 * kWarpProbFloats * 4);
  static constexpr size_t kc = 2 * kKernels * D * 2;  // double-buffered compressed-key tiles
  static constexpr size_t carry = kRows * 4;
  static constexpr size_t bytes = q_or_prob + kc + carry;
  static_assert(q_or_prob % 1024 == 0 && kc % 2048 == 0, "wgmma panels start at 1024 bytes");
};

// Where kernel n, column col of a [64][D] compressed-key tile lives. On Hopper the tile is the
// B operand of warpgroup MMAs (wgmma.cuh's 128B-swizzled column panels: the tensor cores read it
// once per warpgroup); elsewhere each warp loads it with ldmatrix (mma::swizzled).
template <int D>
__device__ __forceinline__ int kc_tile_offset(int n, int col) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  return wgmma::tile_offset<kKernels>(n, col);
#else
  return mma::swizzled<D>(n, col);
#endif
}

// A tile of 64 compressed keys: kernels first, first + stride, ... (stride > 1: the sampled
// normalizer of pass 1, see score_blocks_kernel).
struct KernelTile {
  int first, stride;
};

// Copies tiles of 64 kernels of KV head g into [64][D] shared-memory tiles; kernels past nk are
// zero-filled (they are masked anyway). Thread t copies 16-byte column chunk t % chunks of kernels
// t / chunks + p * rows_per_pass: the addresses that do not depend on the tile are computed once
// per CTA, so a copy costs a multiply-add (docs/infllm_v2.md, session 6).
template <int D>
struct KernelTileCopy {
  static constexpr int chunks = D / 8, rows_per_pass = kThreads / chunks;
  static constexpr int passes = kKernels / rows_per_pass;
  static_assert(kThreads % chunks == 0 && kKernels % rows_per_pass == 0);
  const bf16* head;   // this thread's column of kernel 0
  int n0, pitch, nk;  // pitch: elements from one kernel to the next
  int dst[passes];    // element offsets in a tile

  __device__ KernelTileCopy(const ScoreArgs& a, int b, int g)
      : head(a.kc + (size_t(b) * a.nk * a.Hkv + g) * D + (threadIdx.x % chunks) * 8),
        n0(threadIdx.x / chunks),
        pitch(a.Hkv * D),
        nk(a.nk) {
#pragma unroll
    for (int p = 0; p < passes; ++p)
      dst[p] = kc_tile_offset<D>(n0 + p * rows_per_pass, (threadIdx.x % chunks) * 8);
  }

  __device__ void load(KernelTile tile, bf16* to) const {
#pragma unroll
    for (int p = 0; p < passes; ++p) {
      const int i = tile.first + (n0 + p * rows_per_pass) * tile.stride;
      const bool valid = i < nk;
      mma::cp_async_16(mma::smem_u32(to + dst[p]), head + (valid ? i * pitch : 0), valid);
    }
    mma::cp_async_commit();
  }
};

// acc[nt] = 16 rows of this warp x kernels [nt*8, nt*8+8) of the tile, raw dot products. All 128
// threads call it together (on Hopper it is one warpgroup MMA chain).
template <int D>
__device__ void tile_dots(float (&acc)[kKernels / 8][4], const uint32_t (&qa)[D / 16][4],
                          const bf16* kc_tile, int lane) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  float d[kKernels / 2] = {};
  wgmma::fence();
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks)
    wgmma::mma<0, kKernels>(d, qa[ks], wgmma::k_major<kKernels>(kc_tile, 0, ks * 16));
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::hold(d);
#pragma unroll
  for (int nt = 0; nt < kKernels / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = d[4 * nt + e];
#else
#pragma unroll
  for (int nt = 0; nt < kKernels / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks)
#pragma unroll
    for (int np = 0; np < kKernels / 16; ++np) {
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
// `masked`: some kernel of the tile is not causal for some row; otherwise the compares are
// skipped.
template <bool masked>
__device__ __forceinline__ void accumulate_lse(const float (&acc)[kKernels / 8][4],
                                               const int (&n_causal)[2], int col0, float c,
                                               float weight, float (&m)[2], float (&l)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    // Max and sum as trees over the 8 column pairs: a serial chain of 16 dependent FADDs would
    // leave the 4 warps per scheduler waiting on the pipeline latency.
    float part[kKernels / 8];
#pragma unroll
    for (int nt = 0; nt < kKernels / 8; ++nt) {
      const bool ok0 = !masked || col0 + nt * 8 < n_causal[h];
      const bool ok1 = !masked || col0 + nt * 8 + 1 < n_causal[h];
      part[nt] = fmaxf(ok0 ? acc[nt][2 * h] : -INFINITY, ok1 ? acc[nt][2 * h + 1] : -INFINITY);
    }
#pragma unroll
    for (int w = kKernels / 16; w > 0; w /= 2)
#pragma unroll
      for (int i = 0; i < w; ++i) part[i] = fmaxf(part[i], part[i + w]);
    if (part[0] == -INFINITY) continue;
    // Online softmax against the running max: one rescale of l per tile (m = -inf at first:
    // exp2(-inf) = 0 and l = 0).
    const float m_new = fmaxf(m[h], part[0] * c);
#pragma unroll
    for (int nt = 0; nt < kKernels / 8; ++nt) {
      const bool ok0 = !masked || col0 + nt * 8 < n_causal[h];
      const bool ok1 = !masked || col0 + nt * 8 + 1 < n_causal[h];
      part[nt] = (ok0 ? mma::fast_exp2(fmaf(acc[nt][2 * h], c, -m_new)) : 0.f) +
                 (ok1 ? mma::fast_exp2(fmaf(acc[nt][2 * h + 1], c, -m_new)) : 0.f);
    }
#pragma unroll
    for (int w = kKernels / 16; w > 0; w /= 2)
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
__device__ __forceinline__ void store_probabilities(const float (&acc)[kKernels / 8][4],
                                                    const int (&n_causal)[2], const float (&lse)[2],
                                                    int col0, float c, bool fold, int lane,
                                                    float* warp_prob) {
#pragma unroll
  for (int nt = 0; nt < kKernels / 8; ++nt)
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

// Sum over stored rows [row, row + count) of kernel column col (rows numbered across the CTA's
// warps). When G divides 16 a token's stored rows are consecutive rows of one warp, aligned to
// their count; with 4 or 8 of them (folded G = 8 or 16) the sum is one or two 16-byte loads.
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

// Grid (token tiles of the chunk, Hkv, B); the heaviest (latest) tiles start first.
// Rows: RowLayout. When G divides 16 every token's rows belong to one warp, which then sums and
// pools its own tokens after __syncwarp; otherwise tokens straddle warps and the whole CTA
// synchronizes.
// Occupancy: at D = 64 three CTAs per SM (80 registers, ~120 bytes spilled) hide more latency than
// two (64K, Hq = 16, Hkv = 2 on an H100: 3.7 vs 4.1 ms); at D = 128 three need 172 bytes of
// spills and run slower (128K, Hq = 32: 36.4 vs 29.6 ms), so it keeps two.
template <int D>
__global__ void __launch_bounds__(kThreads, D == 64 ? 3 : 2)
    score_blocks_kernel(const ScoreArgs a) {
  extern __shared__ __align__(1024) unsigned char smem[];  // wgmma tiles: 1024-byte panels
  bf16* q_tile = reinterpret_cast<bf16*>(smem);  // [64][D], dead once fragments are loaded
  float* prob = reinterpret_cast<float*>(smem);  // [warps][kKernels][kProbPitch]: p of the tile
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
  const int r = cfg.kernels_per_block(), blocks_per_tile = kKernels / r;
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
  const KernelTileCopy<D> kc_copy(a, b, g);
  kc_copy.load(KernelTile{0, 1}, kc_tiles);
  if (threadIdx.x < kRows) carry[threadIdx.x] = -INFINITY;  // block 0 has no kernel -1
  mma::cp_async_wait<0>();
  __syncthreads();
  uint32_t qa[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) mma::load_a<D>(qa[ks], q_tile, warp * 16, ks * 16, lane);

  // This thread's two C-fragment rows and how many kernels each may see.
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
  // Pooling: lane l holds kernel l of a 32-kernel half, in block l / r of that half (r is a power
  // of two: shifts, not divisions, in the loop). Token tok's scores row starts at scores0 +
  // tok * token_pitch.
  const int r_shift = __ffs(r) - 1, blocks_per_half = 32 >> r_shift, lane_block = lane >> r_shift;
  const bool block_start = (lane & (r - 1)) == 0;
  const size_t token_pitch = size_t(a.Hkv) * a.n_blocks;
  float* scores0 = a.scores + ((size_t(b) * a.chunk.len + local0) * a.Hkv + g) * a.n_blocks;

  // Pass 1's tiles. Exact (lse_stride 1): every causal kernel. Sampled (lse_stride n > 1): tile 0
  // (attention sinks), then kernels [64, far_end) every n-th with weight n, then every kernel
  // from far_end on: at least the local window, where peaked attention concentrates. far_end is
  // at most n_min - window kernels, so the sampled tiles are causal for every row.
  const int n_min = num_kernels(cfg, t0 + 1), n_max = num_kernels(cfg, t_end);
  const int n = cfg.lse_stride, span = kKernels * n;
  const int window_kernels = cfg.window_size / cfg.kernel_stride;
  const int sampled_tiles = n > 1 ? max(0, n_min - kKernels - window_kernels) / span : 0;
  const int far_end = kKernels + sampled_tiles * span;
  const int tiles_exact = (n_max + kKernels - 1) / kKernels;
  const int tiles_lse =
      sampled_tiles == 0 ? tiles_exact : 1 + sampled_tiles + tiles_exact - far_end / kKernels;
  // Pass 2 stops at the last tile holding a block that some token may choose: the local window's
  // blocks are forced, their scores are never read.
  const int last_free = (t_end - 1) / cfg.block_size - cfg.local_blocks();
  const int tiles_pool = last_free >= cfg.init_blocks ? last_free / blocks_per_tile + 1 : 0;
  auto step_tile = [&](int step) {
    if (step >= tiles_lse) return KernelTile{(step - tiles_lse) * kKernels, 1};  // pass 2
    if (step == 0 || sampled_tiles == 0) return KernelTile{step * kKernels, 1};
    if (step <= sampled_tiles) return KernelTile{kKernels + (step - 1) * span, n};
    return KernelTile{far_end + (step - 1 - sampled_tiles) * kKernels, 1};
  };
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int step = 0; step < tiles_lse + tiles_pool; ++step) {
    const bool pass1 = step < tiles_lse;
    const KernelTile kernels = step_tile(step);
    const int tile = kernels.first / kKernels;  // pass 2: stride 1, tiles in order
    if (step == tiles_lse) {  // pass 1 done: each row's lse is the merge over its quad
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int off = 1; off < 4; off *= 2)
          merge_lse(m[h], l[h], __shfl_xor_sync(~0u, m[h], off), __shfl_xor_sync(~0u, l[h], off));
        m[h] = l[h] > 0.f ? m[h] + log2f(l[h]) : INFINITY;  // no kernels: every p is 0
      }
    }
    mma::cp_async_wait<0>();
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    wgmma::fence_async_proxy();  // the tile's copies before the tensor cores read it
#endif
    __syncthreads();  // tile `step` landed; every thread is done with step - 1's buffers
    if (step + 1 < tiles_lse + tiles_pool)
      kc_copy.load(step_tile(step + 1), kc_tiles + ((step + 1) & 1) * kKernels * D);
    float acc[kKernels / 8][4];
    tile_dots<D>(acc, qa, kc_tiles + (step & 1) * kKernels * D, lane);

    const int col0 = kernels.first + (lane % 4) * 2;  // masked tiles have stride 1
    const bool full = kernels.first + (kKernels - 1) * kernels.stride < n_min;  // all causal
    if (pass1) {
      const float weight = float(kernels.stride);
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

    // s[t, i] = sum over the token's G heads (lane = kernel within a 32-kernel half), then the
    // block max over kernels [r*j - 1, r*j + r - 1] by shuffles: a log-step max over the block's
    // own r kernels plus the kernel just before it (the previous half's or tile's last: carry).
    float* tile_scores = scores0 + tile * blocks_per_tile;
    for (int tok = tok_begin; tok < tok_end; tok += tok_step) {
      int n_tok = kKernels * (tile + 1);  // a full tile is causal for every token
      if (!full) n_tok = num_kernels(cfg, t0 + tok + 1);
      float* token_scores = tile_scores + size_t(tok) * token_pitch;
      const int first_row = fold ? warp * 16 + (tok - tok_begin) * (G / 2) : tok * G;
      const int head_rows = fold ? G / 2 : G;
      float before = lane == 0 ? carry[tok] : 0.f;  // only lane 0 uses (and rewrites) it
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int col = half * 32 + lane;
        const float s = tile * kKernels + col < n_tok
                            ? head_sum(prob, first_row, head_rows, col, warp_local)
                            : -INFINITY;
        float best = s;
        // Blocks of up to 4 kernels (the default: 4) in two unconditional shuffles (no divergence
        // checks); larger blocks continue in a loop.
#pragma unroll
        for (int w = 1; w < 4; w *= 2) {
          const float other = __shfl_down_sync(~0u, best, w);
          best = fmaxf(best, w < r ? other : -INFINITY);
        }
        for (int w = 4; w < r; w *= 2) best = fmaxf(best, __shfl_down_sync(~0u, best, w));
        const float prev = __shfl_up_sync(~0u, s, 1);
        best = fmaxf(best, lane == 0 ? before : prev);
        before = __shfl_sync(~0u, s, 31);
        const int j = half * blocks_per_half + lane_block;  // within the tile
        if (block_start && tile * blocks_per_tile + j < a.n_blocks) token_scores[j] = best;
      }
      if (lane == 0) carry[tok] = before;  // the same lane of the same warp reads it next tile
    }
  }
}

// Order-preserving map of f32 scores to unsigned keys; 0 is below every score (not a candidate)
// and ~0u above every score (forced).
__device__ __forceinline__ uint32_t score_key(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct TopkArgs {
  const float* scores;  // [B, chunk.len, Hkv, n_blocks]
  int32_t* blocks;      // [B, T, Hkv, topk]
  SparseConfig cfg;
  Chunk chunk;
  int T, Hkv, n_blocks, rows;
};

// The k-th largest of the warp's keys, `entries` per lane (key_at(e) = this lane's e-th): the
// largest th with count(key >= th) >= k, one bit at a time from the top. With bits < 32 only the
// top bits are resolved: a lower bound.
template <class KeyAt>
__device__ uint32_t kth_largest_key(KeyAt key_at, int entries, int k, int bits = 32) {
  uint32_t th = 0;
  for (int bit = 31; bit >= 32 - bits; --bit) {
    const uint32_t cand = th | (1u << bit);
    uint32_t count = 0;
#pragma unroll 4
    for (int e = 0; e < entries; ++e) count += key_at(e) >= cand;
    if (int(__reduce_add_sync(~0u, count)) >= k) th = cand;
  }
  return th;
}

// Writes the k selected entries (keys above th, then the lowest-order ties) in entry order e * 32
// + lane, which is ascending block order, and pads with -1. block_at(e): this lane's e-th block.
template <class KeyAt, class BlockAt>
__device__ void write_selected(KeyAt key_at, BlockAt block_at, int entries, uint32_t th, int k,
                               int topk, int32_t* out, int lane) {
  uint32_t above = 0;
  for (int e = 0; e < entries; ++e) above += key_at(e) > th;
  const int ties_taken = k - int(__reduce_add_sync(~0u, above));
  const uint32_t lower = (1u << lane) - 1u;
  int written = 0, ties_seen = 0;
  for (int e = 0; e < entries; ++e) {
    const uint32_t key = key_at(e);
    const bool tie = key == th;
    const uint32_t tie_mask = __ballot_sync(~0u, tie);
    const bool take = key > th || (tie && ties_seen + __popc(tie_mask & lower) < ties_taken);
    const uint32_t take_mask = __ballot_sync(~0u, take);
    if (take) out[written + __popc(take_mask & lower)] = block_at(e);
    written += __popc(take_mask);
    ties_seen += __popc(tie_mask);
  }
  for (int i = written + lane; i < topk; i += 32) out[i] = -1;
}

// Candidate (key, block) slots per warp; 4 per lane.
constexpr int kCandidateSlots = 128;
constexpr int kTopkWarps = 8;

// One warp per (b, token, group) row; lane handles blocks lane, lane + 32, ... The keys stream
// from the block scores (re-read from L1/L2 after the first pass) instead of living in registers,
// so the kernel keeps 32 registers and many warps per SM to cover the memory latency. Searching
// every key 32 times would be most of the work, so the warp first bounds the answer from below:
// tau = the (k - forced)-th largest of the non-forced keys' maxima over 4 groups per lane (a
// subset of the keys, so its rank-k value is no higher), top 16 bits only. The keys >= tau
// (typically the forced ones and a few dozen more) are compacted in block order into shared
// memory and searched exactly; a row with more than kCandidateSlots searches all its keys.
__global__ void __launch_bounds__(kTopkWarps * 32) select_topk_blocks_kernel(const TopkArgs a) {
  __shared__ uint2 slots[kTopkWarps][kCandidateSlots];  // (key, block)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = blockIdx.x * kTopkWarps + warp;
  if (row >= a.rows) return;
  const int g = row % a.Hkv, b = row / (a.Hkv * a.chunk.len);
  const int t = a.chunk.token((row / a.Hkv) % a.chunk.len);
  if (t >= a.T) return;
  const int n = t / a.cfg.block_size + 1, k = min(a.cfg.topk, n), entries = (n + 31) / 32;
  const float* s = a.scores + size_t(row) * a.n_blocks;
  int32_t* out = a.blocks + ((size_t(b) * a.T + t) * a.Hkv + g) * a.cfg.topk;
  auto key_at = [&](int e) {
    const int j = e * 32 + lane;
    return j >= n ? 0u : is_forced_block(a.cfg, t, j) ? ~0u : score_key(s[j]);
  };
  auto block_at = [&](int e) { return e * 32 + lane; };

  uint32_t group_max[4] = {0u, 0u, 0u, 0u};
  int forced = 0;
  for (int e = 0; e < entries; e += 4)
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const uint32_t key = e + u < entries ? key_at(e + u) : 0u;
      forced += key == ~0u;
      if (key != ~0u) group_max[u] = max(group_max[u], key);
    }
  const int free_picks = k - int(__reduce_add_sync(~0u, forced));
  const uint32_t tau = kth_largest_key([&](int u) { return group_max[u]; }, 4, free_picks, 16);

  uint2* mine = slots[warp];
  const uint32_t lower = (1u << lane) - 1u;
  int count = 0;
  for (int e = 0; e < entries; ++e) {
    const uint32_t key = key_at(e);
    const bool keep = key >= tau;
    const uint32_t mask = __ballot_sync(~0u, keep);
    const int pos = count + __popc(mask & lower);
    if (keep && pos < kCandidateSlots) mine[pos] = make_uint2(key, uint32_t(block_at(e)));
    count += __popc(mask);
  }
  if (count > kCandidateSlots)
    return write_selected(key_at, block_at, entries, kth_largest_key(key_at, entries, k), k,
                          a.cfg.topk, out, lane);
  __syncwarp();
  uint2 cand[kCandidateSlots / 32];
#pragma unroll
  for (int i = 0; i < kCandidateSlots / 32; ++i) {
    const int slot = i * 32 + lane;
    cand[i] = slot < count ? mine[slot] : make_uint2(0u, 0u);
  }
  auto cand_key = [&](int i) { return cand[i].x; };
  const uint32_t th = kth_largest_key(cand_key, kCandidateSlots / 32, k);
  write_selected(
      cand_key, [&](int i) { return int(cand[i].y); }, kCandidateSlots / 32, th, k, a.cfg.topk, out,
      lane);
}

void select_topk(const TopkArgs& a, cudaStream_t stream) {
  select_topk_blocks_kernel<<<(a.rows + kTopkWarps - 1) / kTopkWarps, kTopkWarps * 32, 0, stream>>>(
      a);
  CUDA_CHECK_LAUNCH();
}

template <int D>
void launch_scores(const ScoreArgs& a, int B, cudaStream_t stream) {
  constexpr size_t smem = ScoreSmem<D>::bytes;
  CUDA_CHECK(cudaFuncSetAttribute(score_blocks_kernel<D>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int ctas_per_stripe = (kStripe + a.tokens_per_cta - 1) / a.tokens_per_cta;
  const dim3 grid(a.chunk.len / kStripe * ctas_per_stripe, a.Hkv, B);
  score_blocks_kernel<D><<<grid, kThreads, smem, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

void check_inputs(const char* op, const SparseConfig& cfg, const AttentionShape& s) {
  check_sparse_config(op, cfg);
  check_attention_shape(op, s, BlockList{});
  INFLLM_CHECK(s.D == 64 || s.D == 128, op, ": head dim D=", s.D,
               " is not supported by the CUDA kernels (64 or 128)");
  const int G = s.Hq / s.Hkv, r = cfg.kernels_per_block();
  INFLLM_CHECK(G <= kRows, op, ": GQA group G=Hq/Hkv=", G, " exceeds ", kRows);
  INFLLM_CHECK(r <= 32 && (r & (r - 1)) == 0, op, ": block_size/kernel_stride=", r,
               " must be a power of two <= 32 (blocks are pooled within one warp)");
  INFLLM_CHECK(int64_t(num_kernels(cfg, s.T)) * s.Hkv * s.D < (int64_t(1) << 31), op, ": T=", s.T,
               " gives more than 2^31 compressed-key elements per sequence (32-bit offsets)");
}

size_t kc_bytes(const SparseConfig& cfg, const AttentionShape& s) {
  const size_t bytes = size_t(s.B) * num_kernels(cfg, s.T) * s.Hkv * s.D * sizeof(bf16);
  return (bytes + 255) / 256 * 256;
}

int stripes(const AttentionShape& s) {
  return (s.T + kStripe - 1) / kStripe;
}

// Stripes per chunk: the block scores of one chunk fit kScoreChunkBytes.
int chunk_stripes(const SparseConfig& cfg, const AttentionShape& s) {
  const size_t per_stripe = size_t(s.B) * kStripe * s.Hkv * num_blocks(cfg, s.T) * sizeof(float);
  return int(std::clamp<size_t>(kScoreChunkBytes / per_stripe, 1, size_t(stripes(s))));
}

// Bytes of block scores one chunk of query tokens writes (the part of the workspace after kc).
size_t score_chunk_bytes(const SparseConfig& cfg, const AttentionShape& s) {
  return size_t(chunk_stripes(cfg, s)) * kStripe * s.B * s.Hkv * num_blocks(cfg, s.T) *
         sizeof(float);
}

// Steps 2-4 from the compressed keys kc [B, n_kernels, Hkv, D]: per chunk of query tokens, the
// block scores into `scores` (chunk_stripes' bytes), then the top-k lists.
void score_and_select(const SparseConfig& cfg, const AttentionShape& s, const bf16_bits* q,
                      const bf16* kc, float* scores, int32_t* blocks, cudaStream_t stream) {
  const int G = s.Hq / s.Hkv, n_blocks = num_blocks(cfg, s.T);
  const int total = stripes(s), count = (total + chunk_stripes(cfg, s) - 1) / chunk_stripes(cfg, s);
  for (int index = 0; index < count; ++index) {
    const Chunk chunk{index, count, (total - index + count - 1) / count * kStripe};
    ScoreArgs sa{reinterpret_cast<const bf16*>(q),
                 kc,
                 scores,
                 cfg,
                 s.T,
                 s.Hq,
                 s.Hkv,
                 G,
                 num_kernels(cfg, s.T),
                 s.q_row > 0 ? s.q_row : int64_t(s.Hq) * s.D,
                 chunk,
                 n_blocks,
                 kRows / G,
                 float(s.scale * 1.4426950408889634)};
    if (s.D == 64)
      launch_scores<64>(sa, s.B, stream);
    else
      launch_scores<128>(sa, s.B, stream);
    select_topk(TopkArgs{scores, blocks, cfg, chunk, s.T, s.Hkv, n_blocks, s.B * chunk.len * s.Hkv},
                stream);
  }
}

}  // namespace

void compress_keys(const SparseConfig& cfg, const AttentionShape& s, const bf16_bits* k,
                   bf16_bits* kc, void* stream) {
  check_sparse_config("infllm_v2 cuda::compress_keys", cfg);
  check_attention_shape("infllm_v2 cuda::compress_keys", s, BlockList{});
  const int nk = num_kernels(cfg, s.T);
  if (nk == 0) return;
  compress_keys_kernel<<<dim3(nk, s.B), 128, 0, static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const bf16*>(k), reinterpret_cast<bf16*>(kc), s.T, s.Hkv * s.D,
      s.kv_row > 0 ? s.kv_row : int64_t(s.Hkv) * s.D, nk, cfg.kernel_size, cfg.kernel_stride);
  CUDA_CHECK_LAUNCH();
}

size_t select_blocks_workspace_bytes(const SparseConfig& cfg, const AttentionShape& s) {
  check_inputs("infllm_v2 cuda::select_blocks_workspace_bytes", cfg, s);
  return kc_bytes(cfg, s) + score_chunk_bytes(cfg, s);
}

void select_blocks(const SparseConfig& cfg, const AttentionShape& s, const bf16_bits* q,
                   const bf16_bits* k, int32_t* blocks, void* stream_ptr, void* workspace) {
  check_inputs("infllm_v2 cuda::select_blocks", cfg, s);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  void* owned = nullptr;
  if (workspace == nullptr) {
    CUDA_CHECK(cudaMallocAsync(&owned, select_blocks_workspace_bytes(cfg, s), stream));
    workspace = owned;
  }
  bf16* kc = static_cast<bf16*>(workspace);
  float* scores = reinterpret_cast<float*>(static_cast<char*>(workspace) + kc_bytes(cfg, s));
  compress_keys(cfg, s, k, reinterpret_cast<bf16_bits*>(kc), stream);
  score_and_select(cfg, s, q, kc, scores, blocks, stream);
  if (owned != nullptr) CUDA_CHECK(cudaFreeAsync(owned, stream));
}

void select_blocks_compressed(const SparseConfig& cfg, const AttentionShape& s, const bf16_bits* q,
                              const bf16_bits* kc, int32_t* blocks, void* stream_ptr) {
  check_inputs("infllm_v2 cuda::select_blocks_compressed", cfg, s);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  float* scores = nullptr;
  CUDA_CHECK(
      cudaMallocAsync(reinterpret_cast<void**>(&scores), score_chunk_bytes(cfg, s), stream));
  score_and_select(cfg, s, q, reinterpret_cast<const bf16*>(kc), scores, blocks, stream);
  CUDA_CHECK(cudaFreeAsync(scores, stream));
}

}  // namespace infllm::attention::cuda
