// CUDA stage 1 of InfLLM-V2, step 4 (infllm_v2.h): the top-k block list of each (token, KV group)
// from its block scores. One warp per list: a sampled lower bound filters the blocks to a few
// dozen candidates, a bitwise search finds the k-th largest score, an ordered compaction keeps
// ties lowest-index-first (docs/infllm_v2.md).
#include <cuda_runtime.h>

#include "attention/infllm_v2_stage1.cuh"
#include "core/cuda_check.h"

namespace infllm::attention::cuda {
namespace {

// Order-preserving map of f32 scores to unsigned keys; 0 is below every score (not a candidate)
// and ~0u above every score (forced).
__device__ __forceinline__ uint32_t score_key(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

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

}  // namespace

void launch_topk(const TopkArgs& a, cudaStream_t stream) {
  select_topk_blocks_kernel<<<(a.rows + kTopkWarps - 1) / kTopkWarps, kTopkWarps * 32, 0, stream>>>(
      a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace infllm::attention::cuda
