// The block-major sparse passes on Hopper (flash_attention_sm90.h): one warpgroup per CTA on one
// 64-key block of one KV head, walking query tiles of 64/G tokens x G heads gathered from the
// tokens whose lists hold the block (SparseKeyWalk over a SparseIndex), two tiles in flight.
//  * far forward (sparse_far_forward_kernel): the (token, block) pairs outside the token's tile
//    list; P = exp2(S - the tile pass's row maximum), its row sums and P V are added into the
//    f32 sums (SparseSums) with atomics.
//  * backward (sparse_dkdv_dq_kernel): dK and dV of the block in registers over every pair, plus
//    dQ += dS K through a transposed dS^T tile in shared memory, added into f32 query sums with
//    atomics.
//  * the conversions that end both: f32 sums -> bf16 O and lse, f32 dQ sums -> bf16 dQ.
// Block-major, a (token, block) pair costs the gather of the token's G query rows and an atomic
// add of its G x D sums, where a token-major walk copies the whole K/V block for each token that
// chose it: with InfLLM-V2's per-token lists few of those copies are shared.
#include <cuda_runtime.h>

#include <algorithm>

#include "attention/flash_attention_sm90.h"
#include "attention/flash_attention_sm90_tiles.cuh"

namespace infllm::attention::cuda::sm90 {

template <int D>
constexpr size_t sparse_far_smem() {
  return 1024 + size_t(2) * kTile * D * 2 +                          // K, V of the block
         2 * (size_t(kDkdvQueries) * D * 2 + 3 * kDkdvQueries * 4);  // 2 stages: q, max, tokens,
                                                                     // entries
}

template <int D>
constexpr size_t sparse_dkdv_smem() {
  return 1024 + size_t(2) * kTile * D * 2 +                              // K, V of the block
         size_t(kTile) * kDkdvQueries * 2 +                              // dS^T
         2 * (size_t(2) * kDkdvQueries * D * 2 + 4 * kDkdvQueries * 4);  // 2 stages: q, dO, lse,
                                                                         // delta, tokens, entries
}

// The index entries (tokens) of query tile n of a block-major walk into entries[0 .. 64/G),
// with cp.async, one tile ahead of the gather that reads them, so that no row's copy waits on a
// token lookup in global memory.
__device__ __forceinline__ void prefetch_tile_entries(const SparseKeyWalk& walk,
                                                      const SparseIndex& index, int n,
                                                      int* entries) {
  const int e = threadIdx.x;
  if (e < walk.tokens_per_tile) {
    const bool valid = walk.has_entry(n, e);
    cp_async_4(entries + e, valid ? walk.tile_entries(index, n) + e : index.tokens, valid);
  }
}

// The rows of query tile n of a block-major walk (SparseKeyWalk), given the tile's entries in
// shared memory, gathered from each source's [B, T, heads, D] tensor into its swizzled [64][D]
// tile by the CTA's one warpgroup: 8 threads per row, each copying D / 64 16-byte chunks of it,
// so a thread looks up 4 rows at any D (the row lookups, not the copies, dominate the gather's
// instructions); rows the walk marks invalid are zeroed. Row numbers fit 32 bits
// (check_rows_fit_int).
struct QuerySource {
  bf16* tile;
  const bf16* src;
  int heads;
};
template <int D, int N>
__device__ __forceinline__ void gather_query_tile(const SparseKeyWalk& walk, const int* entries,
                                                  const Problem& p, int n,
                                                  const QuerySource (&sources)[N]) {
  constexpr int kThreadsPerRow = 8, kRowsPerStep = kSparseDkdvThreads / kThreadsPerRow;
  const int part = threadIdx.x % kThreadsPerRow;
#pragma unroll
  for (int step = 0; step < kDkdvQueries / kRowsPerStep; ++step) {
    const int row = threadIdx.x / kThreadsPerRow + step * kRowsPerStep;
    const QueryTileRow r = walk.row(entries, p, n, row);
    const int token = walk.b * p.T + r.token;
#pragma unroll
    for (const QuerySource& s : sources) {
      const bf16* from = s.src + (r.valid ? size_t(token * s.heads + r.head) * D : 0);
#pragma unroll
      for (int c = 0; c < D / 64; ++c) {
        const int col = (part + c * kThreadsPerRow) * 8;
        cp_async_16(mma::smem_u32(s.tile + tile_offset<kDkdvQueries>(row, col)), from + col,
                    r.valid);
      }
    }
  }
}

// Fused sparse backward: one warpgroup per CTA, one 64-key block; it walks query tiles of 64/G
// tokens x G heads gathered from the tokens that selected the block (SparseKeyWalk), two tiles in
// flight, with the block's dK and dV in registers. It also adds each tile's dQ share into the f32
// query sums a.dq_acc: block-major, every (token, block) pair costs a gather of the token's Q and
// dO rows and an atomic add of its f32 dQ rows instead of the K/V copy of a token-major dQ pass,
// several times the bytes with per-token block lists. The atomics cover whole lines of the sums
// (query_sums_offset), which is what makes this one pass cheaper than a separate token-major dQ
// pass even for the pairs of each 128-token tile's list (docs/attention_kernels.md).
// At D = 64 three CTAs fit per SM (168 registers, no spills): more gathers and atomics in flight
// (the far forward runs 4).
template <int D>
__global__ void __launch_bounds__(kSparseDkdvThreads, D == 64 ? 3 : 2)
    sparse_dkdv_dq_kernel(KvArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kQ = kDkdvQueries, kCopyThreads = kSparseDkdvThreads;
  extern __shared__ unsigned char smem_raw[];
  bf16* k_tile = aligned_smem(smem_raw);                              // [64][D]
  bf16* v_tile = k_tile + kTile * D;                                  // [64][D]
  bf16* stages = v_tile + kTile * D;                                  // 2 x (q [64][D], dO [64][D])
  bf16* ds_tile = stages + 2 * 2 * kQ * D;                            // dS^T [64][64]
  float* row_stats = reinterpret_cast<float*>(ds_tile + kTile * kQ);  // 2 x (lse, delta) [64]
  int* row_tokens = reinterpret_cast<int*>(row_stats + 2 * 2 * kQ);   // 2 x [64], -1 = padding
  int* entry_stages = row_tokens + 2 * kQ;                            // 2 x [64]: tile entries
  auto q_tile = [&](int i) { return stages + (i & 1) * 2 * kQ * D; };
  auto do_tile = [&](int i) { return q_tile(i) + kQ * D; };
  auto lse_of = [&](int i) { return row_stats + (i & 1) * 2 * kQ; };
  auto delta_of = [&](int i) { return lse_of(i) + kQ; };
  auto tokens_of = [&](int i) { return row_tokens + (i & 1) * kQ; };
  auto entries_of = [&](int i) { return entry_stages + (i & 1) * kQ; };

  const SparseKeyWalk walk(a.index, p, blockIdx.x);
  if (walk.idle) return;
  const int block = walk.block, b = walk.b, kvh = walk.kvh;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int key[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) key[r] = block * kTile + warp * 16 + lane / 4 + 8 * r;

  // Tile i > 0's entries landed with tile i - 1's rows (tile 0 reads them from the index).
  auto load_step = [&](int i, const int* entries) {
    gather_query_tile<D>(walk, entries, p, i,
                         {{q_tile(i), a.q, p.q_heads}, {do_tile(i), a.dout, p.o_heads}});
    if (threadIdx.x < kQ) {
      const QueryTileRow r = walk.row(entries, p, i, threadIdx.x);
      const int idx = r.valid ? (b * p.T + r.token) * p.Hq + r.head : 0;  // token-major
      cp_async_4(lse_of(i) + threadIdx.x, a.lse + idx, r.valid);
      cp_async_4(delta_of(i) + threadIdx.x, a.delta + idx, r.valid);
      tokens_of(i)[threadIdx.x] = r.valid ? r.token : -1;  // -1 sees no key
    }
    if (i + 1 < walk.n_qtiles) prefetch_tile_entries(walk, a.index, i + 1, entries_of(i + 1));
    cp_async_commit();
  };
  load_tile<D, kTile, kCopyThreads>(k_tile, a.k, b, kvh, p.kv_heads, block * kTile, p.T);
  load_tile<D, kTile, kCopyThreads>(v_tile, a.v, b, kvh, p.kv_heads, block * kTile, p.T);
  if (walk.n_qtiles > 0) load_step(0, walk.tile_entries(a.index, 0));

  float dk[D / 2] = {}, dv[D / 2] = {};
  for (int i = 0; i < walk.n_qtiles; ++i) {
    tiles_landed();
    if (i + 1 < walk.n_qtiles) load_step(i + 1, entries_of(i + 1));
    const int* tokens = tokens_of(i);
    // Tokens ascend and padding (-1) ends a tile: past the block, with no padding, every key is
    // seen.
    const bool all_visible = tokens[0] >= (block + 1) * kTile - 1 && tokens[kQ - 1] >= 0;
    dkdv_tile<D, kTile>(
        dk, dv, k_tile, v_tile, 0, q_tile(i), do_tile(i), lse_of(i), delta_of(i), p, lane,
        [&](int col, int r) { return key[r] <= tokens[col]; }, ds_tile, all_visible);
    wgmma::fence_async_proxy();  // dS^T from every warp, before the tensor cores read it
    __syncthreads();
    add_dq<D, kTile, kTile>(
        a.dq_acc, ds_tile, k_tile, [&](int row) { return walk.query_row(p, tokens[row], row); },
        p.G_divisor, lane);
  }
  store_dkdv<D>(a, p, b, kvh, key, lane, walk.chunked, dk, dv);
#endif
}
// Far forward: one warpgroup per CTA, one 64-key block; it walks the query tiles of the
// tokens that hold the block outside their tile list (SparseKeyWalk over the far index), two
// tiles in flight. Each tile's P = exp2(S - the tile pass's row maximum), row sums and P V go
// into a.sums with atomics: the far blocks of a token are spread over many CTAs, and a fixed
// reference maximum lets their shares add up without rescaling. Tile lists hold every token's own
// block, so every far key is before every token: no causal mask.
template <int D>
__global__ void __launch_bounds__(kSparseDkdvThreads, D == 64 ? 4 : 3)
    sparse_far_forward_kernel(FarArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kQ = kDkdvQueries, kCopyThreads = kSparseDkdvThreads;
  extern __shared__ unsigned char smem_raw[];
  bf16* k_tile = aligned_smem(smem_raw);                                // [64][D]
  bf16* v_tile = k_tile + kTile * D;                                    // [64][D]
  bf16* q_stages = v_tile + kTile * D;                                  // 2 x [64][D]
  float* max_stages = reinterpret_cast<float*>(q_stages + 2 * kQ * D);  // 2 x [64]
  int* token_stages = reinterpret_cast<int*>(max_stages + 2 * kQ);      // 2 x [64], -1 = padding
  int* entry_stages = token_stages + 2 * kQ;                            // 2 x [64]: tile entries
  auto q_tile = [&](int i) { return q_stages + (i & 1) * kQ * D; };
  auto entries_of = [&](int i) { return entry_stages + (i & 1) * kQ; };

  const SparseKeyWalk walk(a.index, p, blockIdx.x);
  if (walk.idle) return;
  const int b = walk.b, kvh = walk.kvh, warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  // Tile i > 0's entries landed with tile i - 1's rows (tile 0 reads them from the index).
  auto load_step = [&](int i, const int* entries) {
    gather_query_tile<D>(walk, entries, p, i, {{q_tile(i), a.q, p.q_heads}});
    if (threadIdx.x < kQ) {
      const QueryTileRow r = walk.row(entries, p, i, threadIdx.x);
      const int stat = r.valid ? (b * p.T + r.token) * p.Hq + r.head : 0;
      cp_async_4(max_stages + (i & 1) * kQ + threadIdx.x, a.sums.row_max + stat, r.valid);
      token_stages[(i & 1) * kQ + threadIdx.x] = r.valid ? r.token : -1;
    }
    if (i + 1 < walk.n_qtiles) prefetch_tile_entries(walk, a.index, i + 1, entries_of(i + 1));
    cp_async_commit();
  };
  load_tile<D, kTile, kCopyThreads>(k_tile, a.k, b, kvh, p.kv_heads, walk.block * kTile, p.T);
  load_tile<D, kTile, kCopyThreads>(v_tile, a.v, b, kvh, p.kv_heads, walk.block * kTile, p.T);
  if (walk.n_qtiles > 0) load_step(0, walk.tile_entries(a.index, 0));

  bool overflow = false;
  for (int i = 0; i < walk.n_qtiles; ++i) {
    tiles_landed();
    if (i + 1 < walk.n_qtiles) load_step(i + 1, entries_of(i + 1));
    const int* tokens = token_stages + (i & 1) * kQ;
    const float* row_max = max_stages + (i & 1) * kQ;

    float s[kTile / 2] = {};  // S = Q K^T, m64 x 64
    wgmma::hold(s);
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks)
      wgmma::mma<0, kTile>(s, k_major<kQ>(q_tile(i), 0, ks * 16),
                           k_major<kTile>(k_tile, 0, ks * 16));
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::hold(s);

    // Register n of s is the thread's row (n % 4) / 2: tile row warp 16 + lane / 4 + 8 r.
    const int tile_row[2] = {warp * 16 + lane / 4, warp * 16 + lane / 4 + 8};
    float sum[2] = {};
#pragma unroll
    for (int n = 0; n < kTile / 2; ++n) {
      const int r = (n % 4) / 2;
      const float e = fmaf(s[n], p.scale_log2, -row_max[tile_row[r]]);
      overflow |= e > kFarExponentLimit;
      s[n] = tokens[tile_row[r]] >= 0 ? fast_exp2(e) : 0.f;
      sum[r] += s[n];
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
      const int token = tokens[tile_row[r]];
      if (lane % 4 == 0 && token >= 0)
        atomicAdd(a.sums.row_sum + (size_t(b) * p.T + token) * p.Hq + walk.head(p, tile_row[r]),
                  sum[r]);
    }
    auto sums_row = [&](int row) { return walk.query_row(p, tokens[row], row); };

    uint32_t pa[kTile / 16][4];
#pragma unroll
    for (int ks = 0; ks < kTile / 16; ++ks) wgmma::accumulator_to_a(pa[ks], s, ks);
    float o[D / 2] = {};  // P V, m64 x D
    wgmma::hold(o);
    wgmma::registers_times_tile<D, kTile>(o, pa, v_tile);
    add_query_sums<D>(a.sums.o_sum, o, sums_row, p.G_divisor, lane);
  }
  if (__any_sync(0xffffffffu, overflow) && lane == 0) *a.sums.overflow = 1;
#endif
}
// Columns [8c, 8c + 8) of query row `row` of f32 query sums (contiguous there), times `scale`, as
// 8 bf16 (16 bytes).
__device__ __forceinline__ uint4 query_sums_chunk(const float* sums, int row, int c,
                                                  const Divisor& G, int D, float scale) {
  const float4* src = reinterpret_cast<const float4*>(sums + query_sums_offset(row, 8 * c, G, D));
  const float4 x = src[0], y = src[1];
  return make_uint4(pack_bf16(x.x * scale, x.y * scale), pack_bf16(x.z * scale, x.w * scale),
                    pack_bf16(y.x * scale, y.y * scale), pack_bf16(y.z * scale, y.w * scale));
}

// out = o_sum / row_sum (bf16) and lse = (row_max + log2 row_sum) ln 2: the end of the Hopper
// sparse forward. One thread per 8 columns of a row.
__global__ void sparse_sums_to_output_kernel(SparseSums sums, Problem p, int D, bf16* out,
                                             float* lse) {
  const int chunks = D / 8;
  const size_t n = size_t(p.B) * p.T * p.Hq * chunks;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const int row = int(i / chunks), c = int(i % chunks);  // row: (b, t, h), as the statistics
    const float sum = sums.row_sum[row];  // >= 1: the tile list holds the row's own key
    reinterpret_cast<uint4*>(out)[i] =
        query_sums_chunk(sums.o_sum, row, c, p.G_divisor, D, 1.f / sum);
    if (c == 0) {
      const int h = row % p.Hq, t = row / p.Hq % p.T, b = row / p.Hq / p.T;
      lse[(size_t(b) * p.Hq + h) * p.T + t] = (sums.row_max[row] + log2f(sum)) * kLn2;
    }
  }
}

// dq = scale * the f32 sums of the fused sparse backward (query sums -> [B, T, Hq, D] rows
// q_heads apart). One thread per 8 columns of a row.
__global__ void dq_from_sums_kernel(const float* dq_acc, Problem p, int D, bf16* dq) {
  const int chunks = D / 8;
  const size_t n = size_t(p.B) * p.T * p.Hq * chunks;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const int row = int(i / chunks), c = int(i % chunks);
    const size_t token = size_t(row / p.Hq), head = size_t(row % p.Hq);
    *reinterpret_cast<uint4*>(dq + (token * p.q_heads + head) * D + 8 * c) =
        query_sums_chunk(dq_acc, row, c, p.G_divisor, D, p.scale);
  }
}

// ---------------------------------------------------------------------------------------------
// Launchers.

void sparse_far_forward(int D, const FarArgs& a, const Problem& p, cudaStream_t stream) {
  const dim3 grid(unsigned(sparse_work_bound(p, a.index.chunk_tiles)));
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    launch(sparse_far_forward_kernel<kD>, grid, sparse_far_smem<kD>(), stream, a, p,
           kSparseDkdvThreads);
  });
}

void sparse_backward(int D, const KvArgs& a, const Problem& p, cudaStream_t stream) {
  const dim3 grid(unsigned(sparse_work_bound(p, a.index.chunk_tiles)));
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    launch(sparse_dkdv_dq_kernel<kD>, grid, sparse_dkdv_smem<kD>(), stream, a, p,
           kSparseDkdvThreads);
  });
}

void sums_to_output(int D, const SparseSums& sums, const Problem& p, bf16* out, float* lse,
                    cudaStream_t stream) {
  const size_t rows = size_t(p.B) * p.T * p.Hq;
  sparse_sums_to_output_kernel<<<int(std::min<size_t>((rows * D / 8 + 255) / 256, 65536)), 256, 0,
                                 stream>>>(sums, p, D, out, lse);
  CUDA_CHECK_LAUNCH();
}

void dq_from_sums(int D, const float* dq_acc, const Problem& p, bf16* dq, cudaStream_t stream) {
  const size_t dq_n = size_t(p.B) * p.T * p.Hq * D;
  dq_from_sums_kernel<<<int(std::min<size_t>((dq_n / 8 + 255) / 256, 65536)), 256, 0, stream>>>(
      dq_acc, p, D, dq);
  CUDA_CHECK_LAUNCH();
}

}  // namespace infllm::attention::cuda::sm90
