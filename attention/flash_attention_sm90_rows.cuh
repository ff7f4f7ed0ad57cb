// The Hopper row pass: 128 query rows of one head (64 per warpgroup) walk a list of KV tiles with
// warpgroup MMAs. Three kernels run it (flash_attention_sm90_dense.cu,
// flash_attention_sm90_tile_pass.cu):
//  * forward (dense_rows_kernel<D, false>): 128-key tiles 0 .. the diagonal, S = Q K^T, online
//    softmax, O += P V with P from registers; bf16 O and lse.
//  * dQ (dense_rows_kernel<D, true>): 64-key tiles, S = Q K^T and dP = dO V^T, dS = P (dP - delta),
//    dQ += dS K. The dQ pass holds S, dP and dQ in registers at once, hence the shorter tiles.
//  * sparse tile pass (sparse_tile_pass_kernel<D>): the forward over the 128-row tile's list of
//    shared blocks (SparseSums), two blocks per 128-key tile, keys of blocks outside a row's own
//    list masked; it leaves unnormalized f32 sums for the block-major far pass to add to.
// All 256 threads copy tile j + 1 with cp.async while both warpgroups compute on tile j (one
// barrier per tile); the two warpgroups' softmax and MMA phases interleave on the SM by themselves.
#pragma once

#include "attention/flash_attention_sm90_tiles.cuh"

namespace infllm::attention::cuda::sm90 {

// KV tile of the row pass: the forward's 128 keys give the tensor cores long runs between
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

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Issues S = Q K^T (and, backward, dP = dO V^T) of this warpgroup's 64 rows x the tile's kKeys
// keys; the caller fences before and commits after (the pipelined kernels overlap them). The
// row tiles (q_tile, do_tile) hold kTileRows rows.
template <int D, int kKeys, bool kBackward, int kTileRows = kRows>
__device__ __forceinline__ void issue_tile_scores(float (&s)[kKeys / 2],
                                                  float (&dp)[kBackward ? kKeys / 2 : 1],
                                                  const bf16* q_tile, const bf16* do_tile,
                                                  int group_row0, const bf16* kt, const bf16* vt) {
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    wgmma::mma<0, kKeys>(s, k_major<kTileRows>(q_tile, group_row0, ks * 16),
                         k_major<kKeys>(kt, 0, ks * 16));
    if constexpr (kBackward)
      wgmma::mma<0, kKeys>(dp, k_major<kTileRows>(do_tile, group_row0, ks * 16),
                           k_major<kKeys>(vt, 0, ks * 16));
  }
}

// The same, issued and waited for.
template <int D, int kKeys, bool kBackward>
__device__ __forceinline__ void tile_scores(float (&s)[kKeys / 2],
                                            float (&dp)[kBackward ? kKeys / 2 : 1],
                                            const bf16* q_tile, const bf16* do_tile, int group_row0,
                                            const bf16* kt, const bf16* vt) {
  // The zeros must be in the registers before the fence, not moved after it.
  wgmma::hold(s);
  wgmma::hold(dp);
  wgmma::fence();
  issue_tile_scores<D, kKeys, kBackward>(s, dp, q_tile, do_tile, group_row0, kt, vt);
  wgmma::commit();
  wgmma::wait<0>();
  wgmma::hold(s);
  wgmma::hold(dp);
}

// Sets the scores of keys a row may not see to -inf: keys after the row's token (only on the
// `diagonal` tile) and, for the tile list, keys of blocks outside the row's own list.
// Register i of s is row (i % 4) / 2, key 8 (i / 4) + 2 (lane % 4) + i % 2 of the tile: of its
// half i / 32, block block_of(j, i / 32).
template <int kKeys, int kHalves, bool kTileList, class BlockOf>
__device__ __forceinline__ void mask_tile(float (&s)[kKeys / 2], BlockOf block_of, int j,
                                          bool diagonal, const int (&token)[2],
                                          const uint64_t (&row_mask)[2], int lane) {
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
}

// Forward, online softmax in base 2 without O: moves each row's maximum to take s in, scales the
// running sum to it, turns s into P and adds P to the sum. `correction` is the factor O must be
// scaled by (rescale_rows): at once in the row pass, once the P V still running has landed in the
// pipelined forward. kFmaExpEvery > 0: the exponentials of every kFmaExpEvery-th column pair go
// to the FMA pipe (exp2_on_fma) instead of the special-function unit, whose 16 per SM and cycle
// bound the forward where D is small (flash_attention_sm90_forward.cu).
template <int kKeys, bool kTileList, int kFmaExpEvery = 0>
__device__ __forceinline__ void tile_probabilities(float (&s)[kKeys / 2], float (&row_max)[2],
                                                   float (&row_sum)[2], float (&correction)[2],
                                                   float scale_log2) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < kKeys / 8; ++c)
      mx = fmaxf(mx, fmaxf(s[4 * c + 2 * r], s[4 * c + 2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float new_max = fmaxf(row_max[r], mx * scale_log2);
    // A tile-list row may have seen no key yet; a dense row sees key 0 in the first tile.
    const float base = kTileList && new_max == -INFINITY ? 0.f : new_max;
    correction[r] = fast_exp2(row_max[r] - base);
    row_max[r] = new_max;
    row_sum[r] *= correction[r];
#pragma unroll
    for (int c = 0; c < kKeys / 8; ++c)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& x = s[4 * c + 2 * r + e];
        const float exponent = fmaf(x, scale_log2, -base);
        if constexpr (kFmaExpEvery > 0)
          x = c % kFmaExpEvery == kFmaExpEvery - 1 ? exp2_on_fma(exponent) : fast_exp2(exponent);
        else
          x = fast_exp2(exponent);
        row_sum[r] += x;
      }
  }
}

template <int D>
__device__ __forceinline__ void rescale_rows(float (&acc)[D / 2], const float (&correction)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int c = 0; c < D / 8; ++c) {
      acc[4 * c + 2 * r] *= correction[r];
      acc[4 * c + 2 * r + 1] *= correction[r];
    }
}

// Forward: the online softmax step with O (acc) rescaled at once.
template <int D, int kKeys, bool kTileList>
__device__ __forceinline__ void online_softmax(float (&s)[kKeys / 2], float (&acc)[D / 2],
                                               float (&row_max)[2], float (&row_sum)[2],
                                               float scale_log2) {
  float correction[2];
  tile_probabilities<kKeys, kTileList>(s, row_max, row_sum, correction, scale_log2);
  rescale_rows<D>(acc, correction);
}

// Backward: dS = P (dP - delta) in dp, P recomputed from the saved lse (base 2).
template <int kKeys>
__device__ __forceinline__ void scores_to_ds(const float (&s)[kKeys / 2], float (&dp)[kKeys / 2],
                                             const float (&row_lse2)[2],
                                             const float (&row_delta)[2], float scale_log2) {
#pragma unroll
  for (int i = 0; i < kKeys / 2; ++i) {
    const int r = (i % 4) / 2;
    const float prob = fast_exp2(fmaf(s[i], scale_log2, -row_lse2[r]));
    dp[i] = prob * (dp[i] - row_delta[r]);  // dS; masked keys have s = -inf, prob = 0
  }
}

// Backward, dense tile j of kKeys keys (blocks kKeys / kTile j ..): the mask, then dS in dp.
template <int kKeys>
__device__ __forceinline__ void dense_tile_ds(float (&s)[kKeys / 2], float (&dp)[kKeys / 2], int j,
                                              bool diagonal, const int (&token)[2],
                                              const float (&row_lse2)[2],
                                              const float (&row_delta)[2], float scale_log2,
                                              int lane) {
  constexpr int kHalves = kKeys / kTile;
  const uint64_t all_rows[2] = {};  // mask_tile's tile-list masks, unused by the dense walk
  mask_tile<kKeys, kHalves, false>(
      s, [](int tile, int half) { return kHalves * tile + half; }, j, diagonal, token, all_rows,
      lane);
  scores_to_ds<kKeys>(s, dp, row_lse2, row_delta, scale_log2);
}

// Backward: the thread's rows' lse (base 2) and delta; padding rows get P = 0.
__device__ __forceinline__ void backward_row_stats(const RowsArgs& a, const Problem& p, int b,
                                                   int h, const int (&token)[2],
                                                   float (&row_lse2)[2], float (&row_delta)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool valid = token[r] < p.T;
    const size_t idx = (size_t(b) * p.Hq + h) * p.T + token[r];
    row_lse2[r] = valid ? a.lse[idx] * kLog2e : INFINITY;
    row_delta[r] = valid ? a.delta[idx] : 0.f;
  }
}

// Epilogue: each thread writes 2-element pieces of its two rows: bf16 O and lse (forward), bf16
// dQ (backward), or the tile list's unnormalized f32 sums and row statistics for the far pass.
template <int D, bool kBackward, bool kTileList>
__device__ __forceinline__ void store_rows(const RowsArgs& a, const Problem& p, int b, int h,
                                           const int (&token)[2], const float (&acc)[D / 2],
                                           const float (&row_max)[2], float (&row_sum)[2],
                                           int lane) {
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
}

// The row pass of one CTA (file comment): forward, dQ, or the sparse tile pass (kTileList: the KV
// tiles are the 128-row tile's list of blocks in pairs, keys masked by each row's list).
template <int D, bool kBackward, bool kTileList>
__device__ __forceinline__ void rows_pass(const RowsArgs& a, const Problem& p) {
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
  }
  if constexpr (kBackward) backward_row_stats(a, p, b, h, token, row_lse2, row_delta);

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
    tile_scores<D, kKeys, kBackward>(s, dp, q_tile, do_tile, group_row0, kt, vt);

    uint32_t a_frag[kKeys / 16][4];  // P (forward) or dS (backward) as A fragments
    if constexpr (!kBackward) {
      mask_tile<kKeys, kHalves, kTileList>(s, block_of, j, diagonal, token, row_mask, lane);
      online_softmax<D, kKeys, kTileList>(s, acc, row_max, row_sum, p.scale_log2);
#pragma unroll
      for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::accumulator_to_a(a_frag[ks], s, ks);
    } else {
      dense_tile_ds<kKeys>(s, dp, j, diagonal, token, row_lse2, row_delta, p.scale_log2, lane);
#pragma unroll
      for (int ks = 0; ks < kKeys / 16; ++ks) wgmma::accumulator_to_a(a_frag[ks], dp, ks);
    }

    // O += P V  or  dQ += dS K: the tile as an MN-major [keys][D] operand.
    wgmma::registers_times_tile<D, kKeys>(acc, a_frag, kBackward ? kt : vt);
  }
  store_rows<D, kBackward, kTileList>(a, p, b, h, token, acc, row_max, row_sum, lane);
}
#endif

}  // namespace infllm::attention::cuda::sm90
