// CUDA decode attention (decode_attention.h): one new token's G query heads per KV group over the
// cache, split like flash-decoding. The keys the token sees form a list of tiles of at most 64
// consecutive keys (dense: keys 0 .. p in 64s; sparse: each selected block, cut into 64s and
// clipped at p). Grid (splits, Hkv): CTA s folds tiles [s * per, (s + 1) * per) into a partial
// softmax per head (running max m, sum l, unnormalized output o, base 2); combine_kernel merges
// the splits into out. Splits are chosen to fill the GPU about four CTAs deep, so a long dense
// cache streams through every SM and a sparse list of 64 blocks still spreads over 64+ CTAs.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "attention/decode_attention.h"
#include "attention/decode_tiles.cuh"
#include "attention/flash_attention_mma.cuh"
#include "core/cuda_check.h"
#include "core/error.h"

namespace infllm::attention::cuda {
namespace {

using namespace decode;

// The key tiles the token sees in group g (see the file header).
struct TileList {
  const int32_t* blocks;  // [Hkv, max_blocks] or nullptr (dense)
  int max_blocks, block_size, tiles_per_block, position;

  __host__ __device__ int count() const { return tile_count(blocks != nullptr, *this); }
  __host__ __device__ static int tile_count(bool sparse, const TileList& l) {
    return sparse ? l.max_blocks * l.tiles_per_block : (l.position + kTileRows) / kTileRows;
  }
  // First key and number of keys of tile r of group g; count 0 when the tile is empty.
  __device__ void tile(int g, int r, int& first, int& count) const {
    if (blocks == nullptr) {
      first = r * kTileRows;
      count = min(kTileRows, position + 1 - first);
      return;
    }
    const int blk = blocks[g * max_blocks + r / tiles_per_block];
    const int sub = (r % tiles_per_block) * kTileRows;
    first = blk * block_size + sub;
    count = blk < 0 ? 0 : min(min(kTileRows, block_size - sub), position + 1 - first);
  }
};

struct DecodeArgs {
  const bf16 *q, *k, *v;  // q [Hq, D]; k, v [L, Hkv, D]
  TileList tiles;
  int Hkv, G, tiles_per_split;
  float scale_log2;
  float* part_o;    // [Hkv, splits, G, D]
  float2* part_ml;  // [Hkv, splits, G]: (m, l)
  bf16* out;        // [Hq, D]
};

template <int D>
struct DecodeSmem {
  bf16 k[kTileRows * kKeyPitch<D>];
  bf16 v[kTileRows * D];
  float q[kMaxGroup * D];
  float p[kMaxGroup][kTileRows];  // scores, then probabilities of the tile
  float m[kMaxGroup], l[kMaxGroup], alpha[kMaxGroup];
};

template <int D>
__global__ void __launch_bounds__(kThreads) decode_attention_kernel(const DecodeArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  DecodeSmem<D>& sh = *reinterpret_cast<DecodeSmem<D>*>(smem_raw);
  const int split = blockIdx.x, g = blockIdx.y, G = a.G, t = threadIdx.x;
  const int warp = t / 32, lane = t % 32;
  const int64_t kv_row = int64_t(a.Hkv) * D;
  load_queries<D>(a.q + size_t(g) * G * D, G, sh.q);
  if (t < G) sh.m[t] = -INFINITY, sh.l[t] = 0.f;
  // PV: this thread's output column d and heads hp, hp + heads_step, ...
  constexpr int heads_step = kThreads / D;
  const int d = t % D, hp = t / D;
  float acc[kMaxGroup];
#pragma unroll
  for (int m = 0; m < kMaxGroup; ++m) acc[m] = 0.f;

  const int r_begin = split * a.tiles_per_split;
  const int r_end = min(r_begin + a.tiles_per_split, a.tiles.count());
  for (int r = r_begin; r < r_end; ++r) {
    int first, count;
    a.tiles.tile(g, r, first, count);
    if (count <= 0) continue;  // uniform across the CTA
    __syncthreads();           // the previous tile's readers are done
    load_tile<D>(a.k + first * kv_row + g * D, kv_row, count, kKeyPitch<D>, sh.k);
    load_tile<D>(a.v + first * kv_row + g * D, kv_row, count, D, sh.v);
    __syncthreads();
    {  // scores: thread t takes key t % 64 for heads t / 64, t / 64 + 2, ...
      const int key = t % kTileRows, h0 = t / kTileRows;
      float dot[kMaxGroup];
      row_dots<D>(sh.q, sh.k + key * kKeyPitch<D>, G, h0, kThreads / kTileRows, dot);
#pragma unroll
      for (int m = 0; m < kMaxGroup; ++m) {
        const int h = h0 + m * (kThreads / kTileRows);
        if (h < G) sh.p[h][key] = key < count ? dot[m] * a.scale_log2 : -INFINITY;
      }
    }
    __syncthreads();
    for (int h = warp; h < G; h += kThreads / 32) {  // online softmax, one warp per head
      const float s0 = sh.p[h][lane], s1 = sh.p[h][lane + 32];
      const float m_new = fmaxf(sh.m[h], warp_max(fmaxf(s0, s1)));  // finite: count >= 1
      const float p0 = mma::fast_exp2(s0 - m_new), p1 = mma::fast_exp2(s1 - m_new);
      sh.p[h][lane] = p0;
      sh.p[h][lane + 32] = p1;
      const float sum = warp_sum(p0 + p1);
      if (lane == 0) {
        const float alpha = mma::fast_exp2(sh.m[h] - m_new);  // 0 for the first tile
        sh.alpha[h] = alpha;
        sh.l[h] = sh.l[h] * alpha + sum;
        sh.m[h] = m_new;
      }
    }
    __syncthreads();
#pragma unroll
    for (int m = 0; m < kMaxGroup; ++m) {
      const int h = hp + m * heads_step;
      if (h < G) acc[m] *= sh.alpha[h];
    }
    for (int key = 0; key < count; ++key) {
      const float vd = __bfloat162float(sh.v[key * D + d]);
#pragma unroll
      for (int m = 0; m < kMaxGroup; ++m) {
        const int h = hp + m * heads_step;
        if (h < G) acc[m] = fmaf(sh.p[h][key], vd, acc[m]);
      }
    }
  }
  __syncthreads();
  const size_t part = (size_t(g) * gridDim.x + split) * G;
#pragma unroll
  for (int m = 0; m < kMaxGroup; ++m) {
    const int h = hp + m * heads_step;
    if (h < G) a.part_o[(part + h) * D + d] = acc[m];
  }
  if (t < G) a.part_ml[part + t] = make_float2(sh.m[t], sh.l[t]);
}

// out[h] = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s over the splits s (M = max m_s); splits
// that saw no key have m = -inf. Grid Hq, D threads.
__global__ void combine_kernel(const DecodeArgs a, int splits, int D) {
  const int h = blockIdx.x, g = h / a.G, hh = h % a.G, d = threadIdx.x;
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, a.part_ml[(size_t(g) * splits + s) * a.G + hh].x);
  float num = 0.f, den = 0.f;
  for (int s = 0; s < splits; ++s) {
    const size_t part = (size_t(g) * splits + s) * a.G + hh;
    const float2 ml = a.part_ml[part];
    if (ml.x == -INFINITY) continue;
    const float w = exp2f(ml.x - M);
    num = fmaf(w, a.part_o[part * D + d], num);
    den = fmaf(w, ml.y, den);
  }
  a.out[size_t(h) * D + d] = __float2bfloat16(num / den);
}

int multiprocessors() {
  int device = 0, count = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

TileList tile_list(const DecodeShape& s, const int32_t* blocks, int max_blocks, int block_size) {
  return {blocks, max_blocks, block_size, (block_size + kTileRows - 1) / kTileRows, s.position};
}

// Tiles per CTA so that Hkv * splits is about four CTAs per SM (at least one tile each).
int tiles_per_split(const DecodeShape& s, int tiles) {
  const int target = std::max(1, 4 * multiprocessors() / s.Hkv);
  return std::max(1, (tiles + target - 1) / target);
}

int splits_of(int tiles, int per) {
  return std::max(1, (tiles + per - 1) / per);
}

void check_inputs(const char* op, const DecodeShape& s, int max_blocks, int block_size,
                  bool sparse) {
  check_decode_shape(op, s);
  INFLLM_CHECK(s.D == 64 || s.D == 128, op, ": head dim D=", s.D,
               " is not supported by the CUDA kernels (64 or 128)");
  INFLLM_CHECK(s.Hq / s.Hkv <= kMaxGroup, op, ": GQA group G=Hq/Hkv=", s.Hq / s.Hkv, " exceeds ",
               kMaxGroup);
  INFLLM_CHECK(!sparse || (max_blocks > 0 && block_size > 0), op,
               ": a block list needs max_blocks > 0 and block_size > 0, got ", max_blocks, " and ",
               block_size);
}

}  // namespace

size_t decode_attention_workspace_bytes(const DecodeShape& s, int max_blocks, int block_size,
                                        bool sparse) {
  check_inputs("decode_attention_workspace_bytes", s, max_blocks, block_size, sparse);
  const int tiles = TileList::tile_count(sparse, tile_list(s, nullptr, max_blocks, block_size));
  const size_t splits = size_t(splits_of(tiles, tiles_per_split(s, tiles)));
  return splits * size_t(s.Hq) * (size_t(s.D) * sizeof(float) + sizeof(float2));
}

void decode_attention(const DecodeShape& s, const bf16_bits* q, const bf16_bits* k,
                      const bf16_bits* v, const int32_t* blocks, int max_blocks, int block_size,
                      bf16_bits* out, void* workspace, void* stream_ptr) {
  check_inputs("cuda::decode_attention", s, max_blocks, block_size, blocks != nullptr);
  const TileList tiles = tile_list(s, blocks, max_blocks, block_size);
  const int per = tiles_per_split(s, tiles.count()), splits = splits_of(tiles.count(), per);
  const int G = s.Hq / s.Hkv;
  float* part_o = static_cast<float*>(workspace);
  DecodeArgs a{reinterpret_cast<const bf16*>(q),
               reinterpret_cast<const bf16*>(k),
               reinterpret_cast<const bf16*>(v),
               tiles,
               s.Hkv,
               G,
               per,
               float(double(s.scale) * 1.4426950408889634),
               part_o,
               reinterpret_cast<float2*>(part_o + size_t(splits) * s.Hq * s.D),
               reinterpret_cast<bf16*>(out)};
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const dim3 grid(splits, s.Hkv);
  // Under 48 KiB of shared memory at D = 128: no opt-in attribute needed.
  static_assert(sizeof(DecodeSmem<128>) <= 48 * 1024);
  if (s.D == 64)
    decode_attention_kernel<64><<<grid, kThreads, sizeof(DecodeSmem<64>), stream>>>(a);
  else
    decode_attention_kernel<128><<<grid, kThreads, sizeof(DecodeSmem<128>), stream>>>(a);
  CUDA_CHECK_LAUNCH();
  combine_kernel<<<s.Hq, s.D, 0, stream>>>(a, splits, s.D);
  CUDA_CHECK_LAUNCH();
}

}  // namespace infllm::attention::cuda
