// Dense causal attention with Hopper warpgroup MMAs (see flash_attention_sm90.h).
//
// Every CTA has two warpgroups (256 threads). Operands live in shared memory in the 128B-swizzled
// layout of wgmma.cuh and are copied there with cp.async by all threads, one tile ahead: at each
// step the CTA meets once at a barrier, starts the copy of the next tile, and both warpgroups
// compute on the current one. A warpgroup's MMAs run asynchronously; the two warpgroups interleave
// their tensor-core and softmax phases on the SM without further scheduling.
//  * rows kernel (forward, dQ): 128 query rows of one head (64 per warpgroup), KV tiles 0 .. the
//    diagonal. Forward: 128-key tiles, S = Q K^T, online softmax, O += P V with P from registers.
//    dQ: 64-key tiles, S = Q K^T and dP = dO V^T, dS = P (dP - delta), dQ += dS K.
//    Sparse tile passes: the forward over pairs of blocks from the 128-row tile's list, keys
//    masked by the rows' block lists, leaves unnormalized f32 sums for the far pass; the
//    backward's dQ over the list's blocks leaves f32 dQ for the sparse dK/dV kernel to add to.
//  * sparse far kernel: one 64-key block and the tokens whose list holds it outside their tile
//    list, in query tiles of 64/G tokens x G heads; adds exp2(S - the tile pass's max) and P V
//    with atomics.
//  * dK/dV kernel: 128 keys of one KV head (64 per warpgroup); walks 64-query tiles from the
//    diagonal to the end for each head of its share of the group. S^T = K Q^T and dP^T = V dO^T put
//    keys on the accumulator rows, so P^T and dS^T are A fragments in registers for
//    dV += P^T dO and dK += dS^T Q. dK and dV stay in registers; no atomics.
//  * sparse dK/dV kernel: the dK/dV walk for one 64-key block and the tokens that selected it, plus
//    dQ += dS K through a transposed dS^T tile in shared memory, added into f32 with atomics (for
//    the far pairs only where the dQ tile pass ran).
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "attention/flash_attention_mma.cuh"
#include "attention/flash_attention_sm90.h"
#include "attention/wgmma.cuh"
#include "core/cuda_check.h"

namespace infllm::attention::cuda::sm90 {

using mma::cp_async_16;
using mma::cp_async_4;
using mma::cp_async_commit;
using mma::cp_async_wait;
using mma::fast_exp2;
using mma::pack_bf16;
using wgmma::k_major;
using wgmma::mn_major;
using wgmma::tile_offset;

constexpr int kThreads = 256;  // two warpgroups
constexpr int kRows = 128;     // rows kernel: query rows per CTA; dK/dV kernel: keys per CTA
constexpr int kDkdvQueries = 64;
constexpr int kSparseDkdvThreads = 128;  // one warpgroup

// KV tile of the rows kernel: the forward's 128 keys give the tensor cores long runs between
// softmax phases; the dQ pass holds S, dP and dQ in registers at once, so it takes 64.
template <bool kBackward>
constexpr int rows_keys() {
  return kBackward ? 64 : 128;
}

template <int D, bool kBackward>
constexpr size_t rows_smem() {
  return 1024 + size_t(kBackward ? 2 : 1) * kRows * D * 2 +
         2 * size_t(2) * rows_keys<kBackward>() * D * 2;  // q (, dO), 2 stages of K and V
}

template <int D>
constexpr size_t dkdv_smem() {
  return 1024 + size_t(2) * kRows * D * 2 +  // K, V
         2 * (size_t(2) * kDkdvQueries * D * 2 +
              2 * kDkdvQueries * 4);  // 2 stages: q, dO, lse, delta
}

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

// Dynamic shared memory starts at a 1024-byte boundary (the 128B swizzle needs it); the extra
// 1024 bytes of every allocation pay for rounding up if it ever does not.
__device__ __forceinline__ bf16* aligned_smem(unsigned char* raw) {
  const uint32_t pad = (1024 - (mma::smem_u32(raw) & 1023)) & 1023;
  return reinterpret_cast<bf16*>(raw + pad);
}

// Rows [row0, row0 + kCopyRows) of head `head` of a [B, T, heads, D] tensor into rows
// tile_row0 .. of a swizzled [kTileRows][D] tile, by all kCopyThreads threads of the CTA; rows
// >= T are zero-filled.
template <int D, int kTileRows, int kCopyThreads = kThreads, int kCopyRows = kTileRows>
__device__ void load_tile(bf16* tile, const bf16* src, int b, int head, int heads, int row0, int T,
                          int tile_row0 = 0) {
  constexpr int kChunks = D / 8, kRowsPerStep = kCopyThreads / kChunks;
  static_assert(kCopyRows % kRowsPerStep == 0);
  const int chunk = threadIdx.x % kChunks, r0 = threadIdx.x / kChunks;
  const bf16* from = src + ((size_t(b) * T + row0 + r0) * heads + head) * D + chunk * 8;
  const size_t step = size_t(kRowsPerStep) * heads * D;
#pragma unroll
  for (int i = 0; i < kCopyRows / kRowsPerStep; ++i) {
    const int row = r0 + i * kRowsPerStep;
    const bool valid = row0 + row < T;
    cp_async_16(mma::smem_u32(tile + tile_offset<kTileRows>(tile_row0 + row, chunk * 8)),
                valid ? from + i * step : src, valid);
  }
}

// threadIdx.x / 128, computed so that the compiler knows it is the same in every lane of a warp
// (otherwise it treats branches on it as divergent and serializes the wgmmas behind them).
__device__ __forceinline__ int warpgroup_index() {
  return __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0);
}

// Waits for this thread's copies, publishes them to the tensor cores of every warpgroup.
__device__ __forceinline__ void tiles_landed() {
  cp_async_wait<0>();
  wgmma::fence_async_proxy();
  __syncthreads();
}

// ---------------------------------------------------------------------------------------------
// Rows kernel: forward (O, lse), backward dQ, or the sparse forward's tile pass (kTileList: the KV
// tiles are the 128-row tile's list of blocks in pairs, keys masked by each row's list; it leaves
// f32 sums in a.sums for the block-major far pass to add to).
// At D = 64 the tile pass fits two CTAs per SM in 128 registers (76 bytes spilled), which hides
// its list lookups and masks better: 8.0 -> 7.6 ms at 64K, Hq = 16, Hkv = 2 on an H100.
template <int D, bool kBackward, bool kTileList = false>
__global__ void __launch_bounds__(kThreads, D == 64 && kTileList ? 2 : 1)
    dense_rows_kernel(RowsArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(kRows == kTileRows && !(kBackward && kTileList));
  constexpr int kKeys = rows_keys<kBackward>(), kHalves = kKeys / kTile;
  extern __shared__ unsigned char smem_raw[];
  bf16* q_tile = aligned_smem(smem_raw);                    // [128][D]
  bf16* do_tile = q_tile + kRows * D;                       // [128][D], backward
  bf16* stages = q_tile + (kBackward ? 2 : 1) * kRows * D;  // 2 x (K, V) [kKeys][D]
  auto k_tile = [&](int j) { return stages + (j & 1) * 2 * kKeys * D; };
  auto v_tile = [&](int j) { return k_tile(j) + kKeys * D; };

  const int b = blockIdx.y / p.Hq, h = blockIdx.y % p.Hq, kvh = h / p.G;
  const int row0 = (gridDim.x - 1 - blockIdx.x) * kRows;  // longest rows first
  const int group = warpgroup_index(), warp = threadIdx.x % 128 / 32, lane = threadIdx.x % 32;
  const int group_row0 = group * 64;                     // within the tile
  const int warp_first = row0 + group_row0 + warp * 16;  // first token of the warp
  // KV tile j is 64-key blocks block_of(j, 0 .. kHalves-1): consecutive ones up to the diagonal,
  // or entries 2j, 2j+1 of the tile list (an odd count repeats the last one, masked out).
  const int* tile_blocks = nullptr;
  int tile_count = 0;
  if constexpr (kTileList) {
    const size_t list = tile_list_index(p, b, row0, kvh);
    tile_blocks = a.sums.tile_blocks + list * kMaxTileBlocks;
    tile_count = a.sums.tile_counts[list];
  }
  auto block_of = [&](int j, int half) {
    return kTileList ? tile_blocks[min(kHalves * j + half, tile_count - 1)] : kHalves * j + half;
  };
  int token[2];  // the thread's rows: accumulator registers 4c + 2r + (0, 1) are row r
  float row_max[2], row_sum[2], row_lse2[2], row_delta[2];
  uint64_t row_mask[2];  // tile list: bit i = the row's list holds entry i
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    token[r] = warp_first + lane / 4 + 8 * r;
    row_max[r] = -INFINITY;
    row_sum[r] = 0.f;
    if constexpr (kTileList)
      row_mask[r] =
          token[r] < p.T ? a.sums.row_masks[(size_t(b) * p.T + token[r]) * p.Hkv + kvh] : 0;
    if constexpr (kBackward) {
      const bool valid = token[r] < p.T;
      const size_t idx = (size_t(b) * p.Hq + h) * p.T + token[r];
      row_lse2[r] = valid ? a.lse[idx] * kLog2e : INFINITY;  // padding rows: P = 0
      row_delta[r] = valid ? a.delta[idx] : 0.f;
    }
  }

  load_tile<D, kRows>(q_tile, a.q, b, h, p.q_heads, row0, p.T);
  if constexpr (kBackward) load_tile<D, kRows>(do_tile, a.dout, b, h, p.o_heads, row0, p.T);
  const int n_tiles =
      kTileList ? (tile_count + kHalves - 1) / kHalves : (min(p.T, row0 + kRows) - 1) / kKeys + 1;
  auto load_kv = [&](int j) {
#pragma unroll
    for (int half = 0; half < kHalves; ++half) {
      const int key0 = block_of(j, half) * kTile;
      load_tile<D, kKeys, kThreads, kTile>(k_tile(j), a.k, b, kvh, p.kv_heads, key0, p.T,
                                           half * kTile);
      load_tile<D, kKeys, kThreads, kTile>(v_tile(j), a.v, b, kvh, p.kv_heads, key0, p.T,
                                           half * kTile);
    }
    cp_async_commit();
  };
  load_kv(0);

  float acc[D / 2] = {};  // forward: unnormalized O; backward: dQ (m64 x D accumulator)
  for (int j = 0; j < n_tiles; ++j) {
    tiles_landed();
    if (j + 1 < n_tiles) load_kv(j + 1);
    // Skip tiles entirely after this warpgroup's rows (the dQ pass's 64-key diagonal half).
    if (block_of(j, 0) * kTile > row0 + group_row0 + 63) continue;
    const bf16 *kt = k_tile(j), *vt = v_tile(j);
    const bool diagonal = block_of(j, kHalves - 1) * kTile + kTile - 1 > warp_first;

    float s[kKeys / 2] = {};                   // S = Q K^T, m64 x kKeys
    float dp[kBackward ? kKeys / 2 : 1] = {};  // dP = dO V^T
    // The zeros must be in the registers before the fence, not moved after it.
    wgmma::hold(s);
    wgmma::hold(dp);
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      wgmma::mma<0, kKeys>(s, k_major<kRows>(q_tile, group_row0, ks * 16),
                           k_major<kKeys>(kt, 0, ks * 16));
      if constexpr (kBackward)
        wgmma::mma<0, kKeys>(dp, k_major<kRows>(do_tile, group_row0, ks * 16),
                             k_major<kKeys>(vt, 0, ks * 16));
    }
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::hold(s);
    wgmma::hold(dp);

    // Register i of s is row (i % 4) / 2, key 8 (i / 4) + 2 (lane % 4) + i % 2 of the tile: of
    // its half i / 32.
    if (diagonal) {
#pragma unroll
      for (int i = 0; i < kKeys / 2; ++i)
        if (block_of(j, i / 32) * kTile + 8 * (i / 4 % 8) + 2 * (lane % 4) + (i & 1) >
            token[(i % 4) / 2])
          s[i] = -INFINITY;
    }
    if constexpr (kTileList) {
      // A row's list holds or skips whole blocks (one bit per row and block); most tiles (the
      // window's inner blocks) are held by every row of a warp and need no mask.
      const uint64_t tile_bits = uint64_t((1u << kHalves) - 1) << (kHalves * j);
      if (!__all_sync(0xffffffffu, (row_mask[0] & row_mask[1] & tile_bits) == tile_bits)) {
#pragma unroll
        for (int i = 0; i < kKeys / 2; ++i)
          if (((row_mask[(i % 4) / 2] >> (kHalves * j + i / 32)) & 1) == 0) s[i] = -INFINITY;
      }
    }

    uint32_t a_frag[kKeys / 16][4];  // P (forward) or dS (backward) as A fragments
    if constexpr (!kBackward) {
      // Online softmax in base 2: rescale the running sum and O to the new row maximum.
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int c = 0; c < kKeys / 8; ++c)
          mx = fmaxf(mx, fmaxf(s[4 * c + 2 * r], s[4 * c + 2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float new_max = fmaxf(row_max[r], mx * p.scale_log2);
        // A tile-list row may have seen no key yet; a dense row sees key 0 in the first tile.
        const float base = kTileList && new_max == -INFINITY ? 0.f : new_max;
        const float correction = fast_exp2(row_max[r] - base);
        row_max[r] = new_max;
        row_sum[r] *= correction;
#pragma unroll
        for (int c = 0; c < D / 8; ++c) {
          acc[4 * c + 2 * r] *= correction;
          acc[4 * c + 2 * r + 1] *= correction;
        }
#pragma unroll
        for (int c = 0; c < kKeys / 8; ++c)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = s[4 * c + 2 * r + e];
            x = fast_exp2(fmaf(x, p.scale_log2, -base));
            row_sum[r] += x;
          }
      }
#pragma unroll
      for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::accumulator_to_a(a_frag[ks], s, ks);
    } else {
#pragma unroll
      for (int i = 0; i < kKeys / 2; ++i) {
        const int r = (i % 4) / 2;
        const float prob = fast_exp2(fmaf(s[i], p.scale_log2, -row_lse2[r]));
        dp[i] = prob * (dp[i] - row_delta[r]);  // dS; masked keys have s = -inf, prob = 0
      }
#pragma unroll
      for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::accumulator_to_a(a_frag[ks], dp, ks);
    }

    // O += P V  or  dQ += dS K: the tile as an MN-major [keys][D] operand.
    wgmma::registers_times_tile<D, kKeys>(acc, a_frag, kBackward ? kt : vt);
  }

  // Epilogue: each thread writes 2-element pieces of its two rows.
  bf16* dst = kBackward ? a.dq : a.out;
  const int dst_heads = kBackward ? p.q_heads : p.o_heads;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float row_scale = p.scale;  // backward: dQ = scale * dS K
    if constexpr (!kBackward) {
      row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
      row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
      row_scale = 1.f / row_sum[r];  // every row sees key 0 (tile list: its own): sum >= 1
    }
    if (token[r] >= p.T) continue;
    if constexpr (kTileList) {  // f32 sums, unnormalized, for the far pass to add to
      const int row = (b * p.T + token[r]) * p.Hq + h;
      float* sum_ptr = a.sums.o_sum + query_sums_offset(row, 2 * (lane % 4), p.G_divisor, D);
#pragma unroll
      for (int c = 0; c < D / 8; ++c)
        *reinterpret_cast<float2*>(sum_ptr + c * p.G * 8) =
            make_float2(acc[4 * c + 2 * r], acc[4 * c + 2 * r + 1]);
      if (lane % 4 == 0) {
        const size_t stat = (size_t(b) * p.T + token[r]) * p.Hq + h;
        a.sums.row_max[stat] = row_max[r];
        a.sums.row_sum[stat] = row_sum[r];
      }
      continue;
    }
    bf16* row_ptr = dst + ((size_t(b) * p.T + token[r]) * dst_heads + h) * D;
#pragma unroll
    for (int c = 0; c < D / 8; ++c)
      *reinterpret_cast<uint32_t*>(row_ptr + 8 * c + 2 * (lane % 4)) =
          pack_bf16(acc[4 * c + 2 * r] * row_scale, acc[4 * c + 2 * r + 1] * row_scale);
    if constexpr (!kBackward) {
      if (lane % 4 == 0)
        a.lse_out[(size_t(b) * p.Hq + h) * p.T + token[r]] =
            (row_max[r] + log2f(row_sum[r])) * kLn2;
    }
  }
#endif
}

// ---------------------------------------------------------------------------------------------
// dK/dV kernels.

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// One 64-query tile of a dK/dV walk for this warpgroup's 64 keys (rows key_row0 .. +63 of the
// [kKeyRows][D] K and V tiles): S^T = K Q^T, dP^T = V dO^T, P^T and dS^T from the saved lse and
// delta, dV += P^T dO, dK += dS^T Q. visible(col, r): query column col sees the thread's key r
// (accumulator register i holds key (i % 4) / 2, column 8 (i / 4) + 2 (lane % 4) + i % 2).
// Given ds_tile ([64 keys][64 queries], key_row0 = 0), dS^T is also stored there in bf16 for the
// caller's dQ += dS K.
template <int D, int kKeyRows, class Visible>
__device__ __forceinline__ void dkdv_tile(float (&dk)[D / 2], float (&dv)[D / 2],
                                          const bf16* k_tile, const bf16* v_tile, int key_row0,
                                          const bf16* qt, const bf16* dot, const float* lse,
                                          const float* delta, const Problem& p, int lane,
                                          Visible visible, bf16* ds_tile = nullptr,
                                          bool all_visible = false) {
  constexpr int kQ = kDkdvQueries;
  float st[32] = {}, dpt[32] = {};
  wgmma::hold(st);
  wgmma::hold(dpt);
  wgmma::fence();
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    wgmma::mma<0, kQ>(st, k_major<kKeyRows>(k_tile, key_row0, ks * 16),
                      k_major<kQ>(qt, 0, ks * 16));
    wgmma::mma<0, kQ>(dpt, k_major<kKeyRows>(v_tile, key_row0, ks * 16),
                      k_major<kQ>(dot, 0, ks * 16));
  }
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::hold(st);
  wgmma::hold(dpt);

  auto probabilities = [&](auto seen) {
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int col = 8 * (i / 4) + 2 * (lane % 4) + (i & 1);
      const float prob =
          seen(col, (i % 4) / 2) ? fast_exp2(fmaf(st[i], p.scale_log2, -lse[col] * kLog2e)) : 0.f;
      st[i] = prob;
      dpt[i] = prob * (dpt[i] - delta[col]);
    }
  };
  if (all_visible)
    probabilities([](int, int) { return true; });
  else
    probabilities(visible);
  uint32_t pa[kQ / 16][4], dsa[kQ / 16][4];
#pragma unroll
  for (int ks = 0; ks < kQ / 16; ++ks) {
    wgmma::accumulator_to_a(pa[ks], st, ks);
    wgmma::accumulator_to_a(dsa[ks], dpt, ks);
  }
  if (ds_tile != nullptr) {
    // A fragment register j: key row0 + 8 (j % 2), queries 16 ks + 8 (j / 2) + 2 (lane % 4) + 0, 1.
    const int row0 = threadIdx.x % 128 / 32 * 16 + lane / 4;
#pragma unroll
    for (int ks = 0; ks < kQ / 16; ++ks)
#pragma unroll
      for (int j = 0; j < 4; ++j)
        *reinterpret_cast<uint32_t*>(
            ds_tile + tile_offset<kTile>(row0 + 8 * (j % 2),
                                         16 * ks + 8 * (j / 2) + 2 * (lane % 4))) = dsa[ks][j];
  }
  // The query tiles as MN-major [queries][D] operands.
  wgmma::fence();
#pragma unroll
  for (int ks = 0; ks < kQ / 16; ++ks) {
    wgmma::mma<1, D>(dv, pa[ks], mn_major<kQ>(dot, ks * 16, 0));
    wgmma::mma<1, D>(dk, dsa[ks], mn_major<kQ>(qt, ks * 16, 0));
  }
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::hold(dv);
  wgmma::hold(dk);
#pragma unroll
  for (int ks = 0; ks < kQ / 16; ++ks) {
    wgmma::hold(pa[ks]);
    wgmma::hold(dsa[ks]);
  }
}

// The thread's two keys' dK (scaled) and dV, from m64 x D accumulators.
template <int D>
__device__ __forceinline__ void store_dkdv(const KvArgs& a, const Problem& p, int b, int kvh,
                                           const int (&key)[2], int lane, bool chunked,
                                           const float (&dk)[D / 2], const float (&dv)[D / 2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (key[r] >= p.T) continue;
#pragma unroll
    for (int c = 0; c < D / 8; ++c) {
      const int i = 4 * c + 2 * r;
      store_key_gradients<D>(a, p, b, key[r], kvh, 8 * c + 2 * (lane % 4), chunked, dk[i] * p.scale,
                             dk[i + 1] * p.scale, dv[i], dv[i + 1]);
    }
  }
}

// Adds the m64 x D accumulator x of a one-warpgroup CTA into f32 query sums (query_sums_offset)
// with atomics: tile row `row` to sums row row_index(row), nowhere if that is -1.
template <int D, class RowIndex>
__device__ __forceinline__ void add_query_sums(float* sums, const float (&x)[D / 2],
                                               RowIndex row_index, const Divisor& G, int lane) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_index(threadIdx.x / 32 * 16 + lane / 4 + 8 * r);
    if (row < 0) continue;
    float* base = sums + query_sums_offset(row, 2 * (lane % 4), G, D);
#pragma unroll
    for (int c = 0; c < D / 8; ++c)
      atomicAdd(reinterpret_cast<float2*>(base + c * G.value * 8),
                make_float2(x[4 * c + 2 * r], x[4 * c + 2 * r + 1]));
  }
}

// dQ += dS K for the 64 rows of a sparse query tile, added into dq_acc (f32 query sums,
// unscaled): dS^T in ds_tile as written by dkdv_tile, the block's keys in k_tile. dq_row(row) is
// tile row `row`'s (b T + token) Hq + head, -1 for padding. The rows are other blocks' rows too,
// so the sums go through atomics.
template <int D, class DqRow>
__device__ __forceinline__ void add_dq(float* dq_acc, const bf16* ds_tile, const bf16* k_tile,
                                       DqRow dq_row, const Divisor& G, int lane) {
  float dq[D / 2] = {};
  wgmma::hold(dq);
  wgmma::fence();
#pragma unroll
  for (int ks = 0; ks < kTile / 16; ++ks)
    wgmma::mma<1, D, 1>(dq, mn_major<kTile>(ds_tile, ks * 16, 0),
                        mn_major<kTile>(k_tile, ks * 16, 0));
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::hold(dq);
  add_query_sums<D>(dq_acc, dq, dq_row, G, lane);
}
#endif

// The index entries (tokens) of query tile n of a block-major walk into entries[0 .. 64/G), with
// cp.async, one tile ahead of the gather that reads them: a token lookup in global memory before
// each row's copy stalled the walk (a tenth of the dK/dV pass's stall samples at D = 64).
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
// so a thread looks up 4 rows at any D (8 at D = 128 with a chunk each took a third of the
// dK/dV pass's instructions); rows the walk marks invalid are zeroed. Row numbers fit 32 bits
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

// Dense: 128 keys of one KV head per CTA (64 per warpgroup), 64-query tiles from the diagonal to
// the end for each head of the CTA's share of the group.
template <int D>
__global__ void __launch_bounds__(kThreads, 1) dense_dkdv_kernel(KvArgs a, Problem p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kQ = kDkdvQueries;
  extern __shared__ unsigned char smem_raw[];
  bf16* k_tile = aligned_smem(smem_raw);  // [128][D]
  bf16* v_tile = k_tile + kRows * D;      // [128][D]
  bf16* stages = v_tile + kRows * D;      // 2 x (q [64][D], dO [64][D])
  float* row_stats = reinterpret_cast<float*>(stages + 2 * 2 * kQ * D);  // 2 x (lse, delta) [64]
  auto q_tile = [&](int i) { return stages + (i & 1) * 2 * kQ * D; };
  auto do_tile = [&](int i) { return q_tile(i) + kQ * D; };
  auto lse_of = [&](int i) { return row_stats + (i & 1) * 2 * kQ; };
  auto delta_of = [&](int i) { return lse_of(i) + kQ; };

  const int key0 = blockIdx.x * kRows;
  const int b = blockIdx.y / p.Hkv, kvh = blockIdx.y % p.Hkv;
  const int heads = p.G / a.splits, head0 = kvh * p.G + blockIdx.z * heads;
  const int group = warpgroup_index(), warp = threadIdx.x % 128 / 32, lane = threadIdx.x % 32;
  const int group_key0 = key0 + group * 64;
  int key[2];  // the thread's rows (keys): accumulator registers 4c + 2r + (0, 1) are key r
#pragma unroll
  for (int r = 0; r < 2; ++r) key[r] = group_key0 + warp * 16 + lane / 4 + 8 * r;

  // Step i: head head0 + i / n_tiles, queries (first_tile + i % n_tiles) * 64 .. + 63.
  const int first_tile = key0 / kQ, n_tiles = (p.T + kQ - 1) / kQ - first_tile;
  const int n_steps = heads * n_tiles;
  auto load_step = [&](int i) {
    const int head = head0 + i / n_tiles, q0 = (first_tile + i % n_tiles) * kQ;
    load_tile<D, kQ>(q_tile(i), a.q, b, head, p.q_heads, q0, p.T);
    load_tile<D, kQ>(do_tile(i), a.dout, b, head, p.o_heads, q0, p.T);
    if (threadIdx.x < 2 * kQ) {
      const int t = q0 + threadIdx.x % kQ;
      const float* src = threadIdx.x < kQ ? a.lse : a.delta;
      cp_async_4(lse_of(i) + threadIdx.x, src + (size_t(b) * p.Hq + head) * p.T + t, t < p.T);
    }
    cp_async_commit();
  };
  load_tile<D, kRows>(k_tile, a.k, b, kvh, p.kv_heads, key0, p.T);
  load_tile<D, kRows>(v_tile, a.v, b, kvh, p.kv_heads, key0, p.T);
  load_step(0);

  float dk[D / 2] = {}, dv[D / 2] = {};  // m64 x D accumulators
  for (int i = 0; i < n_steps; ++i) {
    tiles_landed();
    if (i + 1 < n_steps) load_step(i + 1);
    const int q0 = (first_tile + i % n_tiles) * kQ;
    if (q0 + kQ - 1 < group_key0) continue;  // every query before every key of this warpgroup
    dkdv_tile<D, kRows>(dk, dv, k_tile, v_tile, group * 64, q_tile(i), do_tile(i), lse_of(i),
                        delta_of(i), p, lane, [&](int col, int r) {
                          const int query = q0 + col;
                          return query >= key[r] && query < p.T;
                        });
  }
  store_dkdv<D>(a, p, b, kvh, key, lane, false, dk, dv);
#endif
}

// Sparse: one warpgroup per CTA, one 64-key block; it walks query tiles of 64/G tokens x G heads
// gathered from the tokens that selected the block (SparseKeyWalk), two tiles in flight. It also
// adds each tile's dQ share into the f32 query sums a.dq_acc: block-major, every (token, block)
// pair costs a gather of the token's Q and dO rows and an atomic add of its f32 dQ rows instead
// of the K/V copy of a token-major dQ pass, several times the bytes with per-token block lists.
// Taking the dQ of the pairs in each 128-token tile's list (the local window) to a token-major
// pass without atomics paid at D = 128 until the sums took whole lines (query_sums_offset); since
// then the one fused pass is faster (docs/attention_kernels.md v22).
// At D = 64 three CTAs fit per SM (168 registers, no spills): more gathers and atomics in
// flight, 13.7 -> 12.2 ms at 64K, Hq = 16, Hkv = 2 on an H100 (the far forward: 4 CTAs).
template <int D>
__global__ void __launch_bounds__(kSparseDkdvThreads, D == 64 ? 3 : 2)
    sparse_dkdv_kernel(KvArgs a, Problem p) {
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
    add_dq<D>(
        a.dq_acc, ds_tile, k_tile, [&](int row) { return walk.query_row(p, tokens[row], row); },
        p.G_divisor, lane);
  }
  store_dkdv<D>(a, p, b, kvh, key, lane, walk.chunked, dk, dv);
#endif
}

// Sparse far pass: one warpgroup per CTA, one 64-key block; it walks the query tiles of the
// tokens that hold the block outside their tile list (SparseKeyWalk over the far index), two
// tiles in flight. Each tile's P = exp2(S - the tile pass's row maximum), row sums and P V go
// into a.sums with atomics: the far blocks of a token are spread over many CTAs, and a fixed
// reference maximum lets their shares add up without rescaling. Tile lists hold every token's own
// block, so every far key is before every token: no causal mask.
template <int D>
__global__ void __launch_bounds__(kSparseDkdvThreads, D == 64 ? 4 : 3)
    sparse_far_kernel(FarArgs a, Problem p) {
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

// ---------------------------------------------------------------------------------------------
// Host side.
namespace {

template <class Kernel, class Args>
void launch(Kernel kernel, dim3 grid, size_t smem, cudaStream_t stream, const Args& args,
            const Problem& p, int threads = kThreads) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<grid, threads, smem, stream>>>(args, p);
  CUDA_CHECK_LAUNCH();
}

template <bool kBackward, bool kTileList = false>
void launch_rows(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream) {
  const dim3 grid((p.T + kRows - 1) / kRows, p.B * p.Hq);
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    launch(dense_rows_kernel<kD, kBackward, kTileList>, grid, rows_smem<kD, kBackward>(), stream, a,
           p);
  });
}

}  // namespace

bool available() {
  const char* kernels = std::getenv("INFLLM_ATTENTION_KERNELS");
  if (kernels != nullptr && std::strcmp(kernels, "portable") == 0) return false;
  // sm_90a machine code only loads on sm_90 GPUs; elsewhere the kernel comes from the portable
  // PTX, whose body is empty, and reports a lower binary version.
  static const bool compiled_for_this_gpu = [] {
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, dense_rows_kernel<64, false>) == cudaSuccess &&
           attr.binaryVersion == 90;
  }();
  return compiled_for_this_gpu;
}

void forward(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream) {
  launch_rows<false>(D, a, p, stream);
}

void backward_dq(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream) {
  launch_rows<true>(D, a, p, stream);
}

void forward_tiles(int D, const RowsArgs& a, const Problem& p, cudaStream_t stream) {
  launch_rows<false, true>(D, a, p, stream);
}

void forward_far(int D, const FarArgs& a, const Problem& p, cudaStream_t stream) {
  const dim3 grid(unsigned(sparse_work_bound(p, a.index.chunk_tiles)));
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    launch(sparse_far_kernel<kD>, grid, sparse_far_smem<kD>(), stream, a, p, kSparseDkdvThreads);
  });
}

int dkdv_splits(const Problem& p) {
  // Four CTAs' worth per SM (they run one at a time): the causal key tiles differ in length,
  // and the small ones fill in behind the long ones (measured 3% faster than two at 4K and 32K).
  const int base = (p.T + kRows - 1) / kRows * p.B * p.Hkv, target = 4 * sm_count();
  int splits = 1;
  while (base * splits < target && p.G % (splits * 2) == 0) splits *= 2;
  return splits;
}

void backward_dkdv(int D, const KvArgs& a, const Problem& p, cudaStream_t stream) {
  const dim3 grid((p.T + kRows - 1) / kRows, p.B * p.Hkv, a.splits);
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    launch(dense_dkdv_kernel<kD>, grid, dkdv_smem<kD>(), stream, a, p);
  });
}

void backward_dkdv_sparse(int D, const KvArgs& a, const Problem& p, cudaStream_t stream) {
  const dim3 grid(unsigned(sparse_work_bound(p, a.index.chunk_tiles)));
  with_head_dim(D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    launch(sparse_dkdv_kernel<kD>, grid, sparse_dkdv_smem<kD>(), stream, a, p, kSparseDkdvThreads);
  });
}

}  // namespace infllm::attention::cuda::sm90
