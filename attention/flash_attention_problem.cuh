// What every flash attention kernel file shares (the portable flash_attention_*.cu and the Hopper
// flash_attention_sm90_*.cu): the problem description, the argument blocks of the row (forward,
// dQ), far and key (dK/dV) passes, the block-sparse index structures, and two host helpers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "core/cuda_check.h"
#include "core/divisor.h"

namespace infllm::attention::cuda {

using bf16 = __nv_bfloat16;

constexpr int kTile = 64;  // keys per KV tile == sparse block size == query tile of dK/dV
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct Problem {
  int B, T, Hq, Hkv, G, nblocks;  // nblocks = ceil(T / 64) KV tiles
  float scale, scale_log2;        // scale_log2 = scale * log2(e): softmax in base 2
  const int32_t* blocks;          // sparse: [B, T, Hkv, max_blocks]; dense: nullptr
  int max_blocks;
  // Token strides in heads of D elements: q/dq, k/v/dk/dv, out/dout. Kept as 32-bit head counts so
  // the addresses stay ((b T + t) heads + h) D: an int64 element stride made the sparse forward's
  // K/V copies measurably slower (docs/attention_kernels.md).
  int q_heads, kv_heads, o_heads;
  Divisor G_divisor;  // G, for the per-row index math of the sparse passes
};

// A block's token list is walked in chunks of query tiles, one CTA each (SparseIndex::chunk_tiles).
// Popular blocks (the first block is selected by every token) would otherwise make one CTA
// walk the whole sequence while the rest of the GPU idles. In the dK/dV pass a block that needs
// one chunk writes bf16 directly (deterministic); longer ones add their chunks' sums into f32
// accumulators with atomics (rounding then depends on the order chunks finish) and a finalize
// kernel converts. Short chunks keep the CTAs that run at once (sorted by first token) on a
// narrow stretch of tokens, so the f32 query sums' atomics stay in L2; 32 tiles was the fastest
// fixed length (docs/attention_kernels.md has the sweep). The Hopper passes size it by bytes
// (sparse_chunk_tiles).
constexpr int kSparseChunkTiles = 32;

// The block -> tokens index of the block-major sparse passes: for segment
// s = (b*Hkv + g)*nblocks + block, tokens[segment_begin[s] .. segment_begin[s+1]) are the tokens
// that attend to the block, ascending; work[i] = {segment, chunk} of CTA i (sparse_work_bound(p)
// items, idle ones last with x < 0).
struct SparseIndex {
  int* tokens;
  int* segment_begin;  // [B*Hkv*nblocks + 1]
  int2* work;
  int chunk_tiles = kSparseChunkTiles;  // query tiles per CTA (sparse_chunks)
};

// The sparse forward on Hopper in two passes over the same f32 sums. Each 128-token tile has a
// list of the blocks that many of its tokens selected (tile blocks: its own two, the local
// window, blocks shared by neighbours); the rows kernel walks them densely for the tile's 128
// query rows, masked by each token's list, and starts the sums. A block-major pass then adds the
// remaining "far" (token, block) pairs with atomics, relative to the first pass's row maximum.
struct SparseSums {
  int* tile_blocks;     // [B, T/128, Hkv, kMaxTileBlocks]: ascending, tile_counts[] valid
  int* tile_counts;     // [B, T/128, Hkv]
  uint64_t* row_masks;  // [B, T, Hkv]: bit i = the token's list holds tile block i
  float* o_sum;         // [B, T, Hq, D] (query_sums_offset): sum of exp2(s - row_max) v
  // Row statistics token-major, [B, T, Hq]: the G rows of a far query tile's token share one
  // 32-byte sector (head-major, each row's load or atomic took a sector of its own).
  float* row_max;  // the maximum of s over the tile blocks (base 2)
  float* row_sum;  // sum of exp2(s - row_max)
  int* overflow;   // set when a far score exceeds row_max by kFarExponentLimit
};

// Where column col of query row `row` ((b T + t) Hq + head) sits in the f32 sums of the Hopper
// sparse passes (SparseSums::o_sum, the backward's dQ sums). A token's G heads of one KV group
// stay together as in [B, T, Hq, D], but column-chunk-major: columns [8c, 8c + 8) of its G heads
// are contiguous. A warp's reduction of one chunk of an MMA accumulator (8 rows x 4 lanes x 2
// columns) then covers 256 contiguous bytes at G = 8 instead of a 32-byte sector in each of 8
// rows: reductions into random tokens, as the far pairs add them, run at the speed of their
// contiguity, not of their instruction width (docs/attention_kernels.md).
__host__ __device__ __forceinline__ size_t query_sums_offset(int row, int col, const Divisor& G,
                                                             int D) {
  const int token_group = G.quotient(row), head = row - token_group * G.value;
  return size_t(token_group) * G.value * D + size_t(col / 8 * G.value + head) * 8 + col % 8;
}

struct RowsArgs {
  const bf16 *q, *k, *v;
  bf16* out;                 // forward
  float* lse_out;            // forward
  const bf16* dout;          // backward
  const float *lse, *delta;  // backward: lse and delta = rowsum(dO * O), [B, Hq, T]
  bf16* dq;                  // backward
  SparseSums sums;           // Hopper sparse forward's tile pass
  const int* run_if;         // portable sparse forward: when set, runs only if *run_if != 0
};

struct FarArgs {
  const bf16 *q, *k, *v;
  SparseIndex index;  // of the far blocks
  SparseSums sums;
};

struct KvArgs {
  const bf16 *q, *k, *v, *dout;
  // [B, Hq, T]; token-major [B, T, Hq] for the Hopper sparse dK/dV pass, whose query tiles hold
  // a token's G heads: their values share a sector (head-major: 64 sectors per tile, 1/4 of the
  // Q/dO gather's).
  const float *lse, *delta;
  bf16 *dk, *dv;             // written when splits == 1
  float *dk_part, *dv_part;  // dense with splits > 1: [splits, B, T, Hkv, D] f32
  int splits;
  SparseIndex index;       // sparse
  float *dk_acc, *dv_acc;  // sparse: f32 sums of blocks walked in chunks (key_sums_offset)
  // Hopper sparse, and dense with the fused dQ: f32 sums of dS K (unscaled, query_sums_offset).
  float* dq_acc;
};

// Tile blocks of the sparse forward (SparseSums): a block joins its 128-token tile's list when
// at least kTileBlockMinTokens of the tile's tokens selected it. Walking it densely costs the
// tile's 128 rows x 64 keys for each of the G heads; block-major costs each selecting token a
// gather of its G query rows and an atomic add of its G x D sums, and the two cost the same near
// 16-20 tokens for G x D from 8 x 64 to 16 x 128 (docs/attention_kernels.md). Beyond
// kMaxTileBlocks (one bit each in a token's mask) the most selected ones win; the tile's own two
// blocks always join (only they need the causal mask, which the far pass does not apply).
constexpr int kTileRows = 128;
constexpr int kMaxTileBlocks = 64;
constexpr int kTileBlockMinTokens = 16;
// tile_blocks entries of (b, token t's tile, g).
__host__ __device__ inline size_t tile_list_index(const Problem& p, int b, int t, int g) {
  return (size_t(b) * ((p.T + kTileRows - 1) / kTileRows) + t / kTileRows) * p.Hkv + g;
}
// The first index of an ascending x[0 .. n) whose value is not below `value` (n if none).
template <class T, class Index>
__host__ __device__ inline Index lower_bound_index(const T* x, Index n, T value) {
  Index lo = 0, hi = n;
  while (lo < hi) {
    const Index mid = (lo + hi) / 2;
    if (x[mid] < value)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}
// Whether block blk is in token t's tile list.
__device__ inline bool in_tile_list(const SparseSums& s, const Problem& p, int b, int t, int g,
                                    int blk) {
  const size_t list = tile_list_index(p, b, t, g);
  const int* blocks = s.tile_blocks + list * kMaxTileBlocks;
  const int i = lower_bound_index(blocks, s.tile_counts[list], blk);
  return i < s.tile_counts[list] && blocks[i] == blk;
}
// Far scores may exceed the first pass's row maximum by this much (base 2) before the sums could
// overflow f32 (64 blocks x 64 keys x 2^64 stays far below 2^128); beyond it the forward reruns
// on the exact portable kernel.
constexpr float kFarExponentLimit = 64.f;

// Query tiles of a sparse dK/dV segment of `tokens` tokens: 64/G tokens x G heads per tile.
__host__ __device__ inline int sparse_query_tiles(int tokens, int G) {
  const int tokens_per_tile = kTile / G;
  return (tokens + tokens_per_tile - 1) / tokens_per_tile;
}

// CTAs that a segment of `tiles` query tiles needs (one even when empty: it writes the zero
// gradients of a block that no token selected).
__host__ __device__ inline int sparse_chunks(int tiles, int chunk_tiles) {
  return tiles > chunk_tiles ? (tiles + chunk_tiles - 1) / chunk_tiles : 1;
}

// A bound on the CTAs of a block-major sparse launch (the work list is built on the GPU): a
// segment of n tokens needs at most n / (64/G) / chunk_tiles + 2 chunks.
inline size_t sparse_work_bound(const Problem& p, int chunk_tiles) {
  const size_t entries = size_t(p.B) * p.T * p.Hkv * p.max_blocks;
  const size_t segments = size_t(p.B) * p.Hkv * p.nblocks;
  return entries / (kTile / p.G) / chunk_tiles + 2 * segments;
}

// Where query row `row` (0..63) of a dK/dV query tile comes from.
struct QueryTileRow {
  int token, head;
  bool valid;
};

// The query tiles of sparse dK/dV CTA `item`: chunk `chunk` of the tokens that selected KV block
// `block` of head kvh (from the transposed index), 64/G tokens x G heads per tile.
struct SparseKeyWalk {
  int b = 0, kvh = 0, block = 0;
  int seg_begin = 0, seg_count = 0, first_qtile = 0, n_qtiles = 0, tokens_per_tile = 0;
  bool idle = true, chunked = false;
  SparseKeyWalk() = default;
  __device__ SparseKeyWalk(const SparseIndex& index, const Problem& p, int item) {
    const int2 work = index.work[item];  // {segment, chunk}
    idle = work.x < 0;
    if (idle) return;
    const int seg = work.x;  // (b * Hkv + kvh) * nblocks + block
    block = seg % p.nblocks;
    kvh = seg / p.nblocks % p.Hkv;
    b = seg / p.nblocks / p.Hkv;
    tokens_per_tile = kTile / p.G;
    seg_begin = index.segment_begin[seg];
    seg_count = index.segment_begin[seg + 1] - seg_begin;
    const int seg_tiles = sparse_query_tiles(seg_count, p.G);
    first_qtile = work.y * index.chunk_tiles;
    n_qtiles = max(0, min(seg_tiles - first_qtile, index.chunk_tiles));
    chunked = sparse_chunks(seg_tiles, index.chunk_tiles) > 1;
  }
  // The index entries (tokens) of query tile n (n counts from the chunk's first tile): the first
  // tokens_per_tile of them, those at or past seg_count are not the walk's.
  __device__ const int* tile_entries(const SparseIndex& index, int n) const {
    return index.tokens + seg_begin + (first_qtile + n) * tokens_per_tile;
  }
  // Whether entry e (< tokens_per_tile) of query tile n is one of the walk's tokens.
  __device__ bool has_entry(int n, int e) const {
    return (first_qtile + n) * tokens_per_tile + e < seg_count;
  }
  // Row `row` of query tile n, given that tile's entries (tile_entries or a copy of them).
  __device__ QueryTileRow row(const int* entries, const Problem& p, int n, int row) const {
    QueryTileRow r;
    const int tile_token = p.G_divisor.quotient(row);
    r.valid = row < tokens_per_tile * p.G && has_entry(n, tile_token);
    r.token = r.valid ? entries[tile_token] : 0;
    r.head = kvh * p.G + row - tile_token * p.G;
    return r;
  }
  __device__ int head(const Problem& p, int row) const {
    return kvh * p.G + p.G_divisor.remainder(row);
  }
  // The [B, T, Hq] row index of tile row `row`, whose token is `token` (-1 for padding: -1).
  __device__ int query_row(const Problem& p, int token, int row) const {
    return token < 0 ? -1 : (b * p.T + token) * p.Hq + head(p, row);
  }
};

// dK (already scaled) and dV of key `key`, columns col and col + 1: f32 sums for a chunked sparse
// walk, f32 partials for a dense pass split over `split` CTAs, else bf16 gradients.
// Where column col of key `key`'s f32 dK or dV sum (chunked sparse walks) sits: per (b, 64-key
// block, KV head), column-chunk-major as the query sums (query_sums_offset), so that a warp's
// reduction of one accumulator chunk covers 8 keys x 32 contiguous bytes.
__host__ __device__ __forceinline__ size_t key_sums_offset(const Problem& p, int b, int key,
                                                           int kvh, int col, int D) {
  return ((size_t(b) * p.nblocks + key / kTile) * p.Hkv + kvh) * kTile * D +
         size_t(col / 8 * kTile + key % kTile) * 8 + col % 8;
}

template <int D>
__device__ __forceinline__ void store_key_gradients(const KvArgs& a, const Problem& p, int b,
                                                    int key, int kvh, int col, bool chunked,
                                                    float k0, float k1, float v0, float v1) {
  if (chunked) {
    const size_t at = key_sums_offset(p, b, key, kvh, col, D);
#if __CUDA_ARCH__ >= 900  // one 8-byte atomic per pair: half the atomic operations
    atomicAdd(reinterpret_cast<float2*>(a.dk_acc + at), make_float2(k0, k1));
    atomicAdd(reinterpret_cast<float2*>(a.dv_acc + at), make_float2(v0, v1));
#else
    atomicAdd(a.dk_acc + at, k0);
    atomicAdd(a.dk_acc + at + 1, k1);
    atomicAdd(a.dv_acc + at, v0);
    atomicAdd(a.dv_acc + at + 1, v1);
#endif
  } else if (a.splits > 1) {
    const size_t row = ((size_t(b) * p.T + key) * p.Hkv + kvh) * D + col;  // contiguous f32
    const size_t part = size_t(blockIdx.z) * p.B * p.T * p.Hkv * D + row;
    *reinterpret_cast<float2*>(a.dk_part + part) = make_float2(k0, k1);
    *reinterpret_cast<float2*>(a.dv_part + part) = make_float2(v0, v1);
  } else {
    const size_t out = ((size_t(b) * p.T + key) * p.kv_heads + kvh) * D + col;
    *reinterpret_cast<__nv_bfloat162*>(a.dk + out) = __floats2bfloat162_rn(k0, k1);
    *reinterpret_cast<__nv_bfloat162*>(a.dv + out) = __floats2bfloat162_rn(v0, v1);
  }
}

// Calls f with std::integral_constant<int, D> for the supported head dims (64, 128).
template <class F>
void with_head_dim(int D, F&& f) {
  if (D == 64)
    f(std::integral_constant<int, 64>{});
  else
    f(std::integral_constant<int, 128>{});
}

inline int sm_count() {
  int device = 0, count = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

}  // namespace infllm::attention::cuda
