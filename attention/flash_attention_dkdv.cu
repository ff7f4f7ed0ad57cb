// Portable dK/dV kernels (mma.sync, every GPU since sm_80) and the backward's small kernels that
// both the portable and the Hopper paths use (delta, the reduction of split partial sums, the
// conversion of chunked f32 key sums).
//
// A dK/dV CTA owns 64 keys (4 warps x 16 keys) and walks 64-row query tiles; S^T and dP^T with keys
// as MMA rows put P^T and dS^T straight from accumulators into the dV/dK MMAs (no shared-memory
// transpose), and dK and dV stay in registers.
//  * dense_dkdv_kernel: the query tiles at and after the diagonal, for the heads of the group
//    (split over CTAs when there are too few KV tiles to fill the GPU; partial sums then go to f32
//    scratch and reduce_splits_kernel adds them in a fixed order).
//  * sparse_dkdv_kernel: the tokens that selected this block, from the block -> tokens index
//    (flash_attention_sparse_index.cu), each 64-row query tile packing 64/G tokens x G heads. Long
//    lists are cut into chunks (one CTA each, f32 atomic sums, then finalize_chunked_kernel), and
//    the CTAs run in the order of their chunks' first tokens, so that the ~32 blocks whose local
//    window holds a token read its Q/dO rows at about the same time (L2 hits).
// dQ has its own pass here (the rows kernels' backward) instead of FlashAttention-2's atomic adds
// from the dK/dV kernel: deterministic, at the price of recomputing S and dP (7 instead of 5 tile
// matmuls).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "attention/flash_attention_passes.h"
#include "attention/flash_attention_rows.cuh"
#include "core/cuda_check.h"

namespace infllm::attention::cuda {
namespace portable {
namespace {

constexpr int kKeyWarps = 4;  // dK/dV kernel: 4 warps x 16 keys
constexpr int kKeyThreads = kKeyWarps * 32;

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

// One chunk of kQueryChunk queries of a query tile for this warp's 16 keys: S^T = K Q^T and
// dP^T = V dO^T, P^T and dS^T from the saved lse and delta (causal: key <= token; padding rows
// have token -1), dV += P^T dO and dK += dS^T Q.
template <int D, int kQueryChunk, bool kKeyFragmentsInRegisters>
__device__ __forceinline__ void dkdv_chunk(
    float (&dk)[D / 8][4], float (&dv)[D / 8][4],
    const uint32_t (&key_frags)[kKeyFragmentsInRegisters ? D / 16 : 1][2][4], const bf16* k_tile,
    const bf16* v_tile, const bf16* q_tile, const bf16* do_tile, const float* lse_t,
    const float* delta_t, const int* token_t, int c, int key0, int warp, int lane,
    const Problem& p) {
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

// The dK/dV walk of one CTA (file comment): dense (kSparse = false) or sparse.
template <int D, bool kSparse>
__device__ __forceinline__ void dkdv_pass(const KvArgs& a, const Problem& p) {
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

    for (int c = 0; c < kTile / kQueryChunk; ++c)
      dkdv_chunk<D, kQueryChunk, kKeyFragmentsInRegisters>(dk, dv, key_frags, k_tile, v_tile,
                                                           q_tile, do_tile, lse_t, delta_t, token_t,
                                                           c, key0, warp, lane, p);
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

template <int D>
__global__ void __launch_bounds__(kKeyThreads, dkdv_ctas_per_sm<D>())
    dense_dkdv_kernel(KvArgs a, Problem p) {
  dkdv_pass<D, false>(a, p);
}

template <int D>
__global__ void __launch_bounds__(kKeyThreads, dkdv_ctas_per_sm<D>())
    sparse_dkdv_kernel(KvArgs a, Problem p) {
  dkdv_pass<D, true>(a, p);
}

template <int D, bool kSparse>
void launch_dkdv(const KvArgs& a, const Problem& p, cudaStream_t stream) {
  constexpr size_t smem = dkdv_smem<D>();
  auto kernel = kSparse ? sparse_dkdv_kernel<D> : dense_dkdv_kernel<D>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid = kSparse ? dim3(unsigned(sparse_work_bound(p, a.index.chunk_tiles)))
                            : dim3(p.nblocks, p.B * p.Hkv, a.splits);
  kernel<<<grid, kKeyThreads, smem, stream>>>(a, p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void dkdv(bool sparse, int D, const KvArgs& a, const Problem& p, cudaStream_t stream) {
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    if (sparse)
      launch_dkdv<kD, true>(a, p, stream);
    else
      launch_dkdv<kD, false>(a, p, stream);
  });
}

}  // namespace portable

// ---------------------------------------------------------------------------------------------
// Small kernels of the backward, for both paths.
namespace {

// delta[b, h, t] = sum_d dO * O. D/8 lanes per row, one 16-byte chunk of each tensor per lane,
// reduced by shuffles within the row's lanes: each warp reads whole rows, coalesced. With
// lse_rows set, delta is token-major ([B, T, Hq], as KvArgs for the Hopper sparse pass) and
// lse_rows gets a token-major copy of lse.
template <int D>
__global__ void row_deltas_kernel(const bf16* out, const bf16* dout, const float* lse, float* delta,
                                  float* lse_rows, Problem p) {
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

}  // namespace

void row_deltas(int D, const bf16* out, const bf16* dout, const float* lse, float* delta,
                float* lse_rows, const Problem& p, cudaStream_t stream) {
  const size_t rows = size_t(p.B) * p.T * p.Hq;
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    row_deltas_kernel<kD><<<int((rows * (kD / 8) + 255) / 256), 256, 0, stream>>>(
        out, dout, lse, delta, lse_rows, p);
  });
  CUDA_CHECK_LAUNCH();
}

void reduce_splits(const KvArgs& a, const Problem& p, int D, cudaStream_t stream) {
  const size_t n = size_t(p.B) * p.T * p.Hkv * D;
  reduce_splits_kernel<<<int(std::min<size_t>((n + 255) / 256, 65536)), 256, 0, stream>>>(
      a.dk_part, a.dv_part, a.splits, n, p, D, a.dk, a.dv);
  CUDA_CHECK_LAUNCH();
}

void finalize_chunked(const KvArgs& a, const Problem& p, int D, cudaStream_t stream) {
  finalize_chunked_kernel<<<int(size_t(p.B) * p.T * p.Hkv), D, 0, stream>>>(
      a.dk_acc, a.dv_acc, a.index, p, D, a.dk, a.dv);
  CUDA_CHECK_LAUNCH();
}

}  // namespace infllm::attention::cuda
