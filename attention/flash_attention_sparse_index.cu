// The block-sparse schedules' index structures, built on the GPU from the block lists:
//  * the block -> tokens index (SparseIndex) of the block-major passes: one key per selected
//    (token, group, block), radix-sorted by (group, block) so that every block's token list is
//    ascending (32-bit keys whenever they fit 31 bits, else 64-bit), segment starts found by
//    binary search, and a work list of {segment, chunk} CTA items sorted by (group, the chunk's
//    first token);
//  * the Hopper sparse forward's tile lists and row masks (SparseSums, tile_blocks_kernel): the
//    blocks many of a 128-token tile's tokens chose, walked densely by the tile pass.
#include <cuda_runtime.h>
#include <cub/cub.cuh>

#include <algorithm>

#include "attention/flash_attention_passes.h"
#include "core/cuda_check.h"
#include "core/error.h"

namespace infllm::attention::cuda {
namespace {

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

}  // namespace

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
// into a stretch of sums that stays in L2; clamped to [8, 64] tiles (docs/attention_kernels.md
// has the sweeps of the far forward's and the fused backward's chunk lengths).
int sparse_chunk_tiles(const Problem& p, int D) {
  const int tokens = (1 << 20) / (p.Hq * D * int(sizeof(float)));
  return std::clamp(tokens / (kTile / p.G), 8, 64);
}

}  // namespace infllm::attention::cuda
