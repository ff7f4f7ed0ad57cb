// InfLLM-V2 stage 1: which KV blocks each query token attends to (docs/infllm_v2.md, steps 1-4).
//
// Layouts (row-major; on CUDA q and k may have larger token strides, AttentionShape::q_row and
// kv_row, e.g. slices of the fused QKV projection), G = Hq / Hkv:
//   q       [B, T, Hq,  D]   after RoPE
//   k       [B, T, Hkv, D]   after RoPE
//   kc      [B, n_kernels, Hkv, D]   compressed keys, n_kernels = num_kernels(cfg, T)
//   scores  [B, T, Hkv, num_blocks(cfg, T)]   block scores S (CPU reference only)
//   blocks  [B, T, Hkv, cfg.topk] int32: the blocks token t of KV group g attends to, ascending,
//           padded with -1; exactly the BlockList that attention_forward reads (max_blocks = topk).
//
// The algorithm, for token t of group g (j_t = t / block_size is t's own block):
//   1. kernel i = mean of k over tokens [i*stride, i*stride + kernel_size); no parameters.
//   2. p[t,h,i] = softmax over the causal kernels (those ending at or before t) of
//   q[t,h].kc[i]*scale;
//      s[t,g,i] = sum of p over the G heads of the group. A token before the first kernel's end
//      has no kernel scores.
//   3. S[t,g,j] = max of s over kernels [r*j - 1, r*j + r - 1] (r = block_size / stride) that are
//      causal for t; -inf when none is. Blocks j < init_blocks and the local_blocks blocks ending
//      at j_t are forced (+inf). Blocks after j_t are never candidates.
//   4. the k = min(topk, j_t + 1) best blocks, ranked by S descending and, on equal S, by the LOWER
//      block index first (equal scores are common: neighbouring blocks share kernel r*j + r - 1).
//      topk counts the forced blocks. Written ascending; no gradient flows through selection.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "attention/flash_attention.h"
#include "core/config_check.h"
#include "core/host_device.h"

namespace infllm::attention {

// Defaults are the released MiniCPM4 sparse_config. All values are runtime (recipe `attention:`).
struct SparseConfig {
  // kernel_size and kernel_stride are the InfLLM-V2 paper's and MiniCPM4's names (a compressed
  // key is their "semantic kernel"); the CUDA code calls a compressed key a ckey and keeps
  // "kernel" for CUDA kernels.
  int kernel_size = 32;    // tokens averaged into one compressed key
  int kernel_stride = 16;  // tokens between the starts of consecutive compressed keys
  int block_size = 64;     // tokens per selectable KV block
  int init_blocks = 1;     // leading blocks every token sees (attention sinks)
  int window_size = 2048;  // tokens of the local window, a whole number of blocks
  int topk = 64;           // blocks per (token, group), forced blocks included
  int dense_len = 8192;    // auto mode: dense up to this length, sparse above (0: always sparse)
  // Softmax normalizer of step 2 on the GPU: 1 = exact; n > 1 = estimated, far from the token,
  // from every n-th kernel weighted by n (the first 64 kernels and the local window stay exact;
  // docs/infllm_v2.md has its agreement with the exact choice). The CPU reference is exact.
  int lse_stride = 1;

  INFLLM_HOST_DEVICE int local_blocks() const { return window_size / block_size; }
  // Kernels whose span starts in one block: the pooling window of block j is [r*j - 1, r*j + r -
  // 1].
  INFLLM_HOST_DEVICE int kernels_per_block() const { return block_size / kernel_stride; }

  bool operator==(const SparseConfig&) const = default;
};

// The one validator of a SparseConfig (the recipe's `attention:` keys, the attention op and the
// CUDA entry points all call it): throws infllm::Error naming the offending field in the words
// of `check` (a recipe key such as attention.topk, or the op's field name) and the fix.
void check_sparse_config(const SparseConfig& cfg, const ConfigCheck& check);
// The same for a direct call of `op`: "op: topk: 16 is less than ...".
void check_sparse_config(const char* op, const SparseConfig& cfg);

// Full kernels inside the first n tokens; num_kernels(cfg, t + 1) are causal for token t.
INFLLM_HOST_DEVICE inline int num_kernels(const SparseConfig& cfg, int n) {
  return n < cfg.kernel_size ? 0 : (n - cfg.kernel_size) / cfg.kernel_stride + 1;
}
INFLLM_HOST_DEVICE inline int num_blocks(const SparseConfig& cfg, int n) {
  return (n + cfg.block_size - 1) / cfg.block_size;
}
// Init blocks and the local window: always selected (for blocks j <= t / block_size).
INFLLM_HOST_DEVICE inline bool is_forced_block(const SparseConfig& cfg, int t, int j) {
  const int own = t / cfg.block_size;
  return j < cfg.init_blocks || (j <= own && j > own - cfg.local_blocks());
}

// Entries common to two block lists [rows, max_blocks] (ascending, -1 padded) and entries of a.
struct BlockOverlap {
  size_t common = 0, in_a = 0;
};
BlockOverlap block_overlap(const int32_t* a, const int32_t* b, size_t rows, int max_blocks);

// Fraction of the selected entries on which two block lists [rows, max_blocks] agree:
// sum over rows of |a_row ∩ b_row| / sum over rows of |a_row| (valid entries, -1 ignored).
double block_agreement(const int32_t* a, const int32_t* b, size_t rows, int max_blocks);

namespace cpu {

// Reference implementation in double precision, OpenMP over (b, t). T = float or double.
template <class T>
void compress_keys(const SparseConfig& cfg, const AttentionShape& shape, const T* k, T* kc);

// Block scores S [B, T, Hkv, num_blocks(cfg, T)]: +inf forced, -inf future or without kernels.
template <class T>
std::vector<double> score_blocks(const SparseConfig& cfg, const AttentionShape& shape, const T* q,
                                 const T* k);

// blocks [B, T, Hkv, cfg.topk].
template <class T>
void select_blocks(const SparseConfig& cfg, const AttentionShape& shape, const T* q, const T* k,
                   int32_t* blocks);

// The same lists for the given tokens only: blocks [B, tokens.size(), Hkv, cfg.topk]. Spot checks
// of long sequences, where every token's reference would take hours.
template <class T>
void select_blocks_at(const SparseConfig& cfg, const AttentionShape& shape, const T* q, const T* k,
                      const std::vector<int>& tokens, int32_t* blocks);

// Steps 2-4 on compressed keys the caller made (NSA's learned compression, attention/nsa.h):
// kc [B, num_kernels(cfg, T), Hkv, D] instead of step 1's means. blocks [B, T, Hkv, cfg.topk].
template <class T>
void select_blocks_compressed(const SparseConfig& cfg, const AttentionShape& shape, const T* q,
                              const T* kc, int32_t* blocks);

// Steps 2-4 for the one token t of a sequence (B = 1, T > t): q_t [Hq, D] its queries, kc
// [>= num_kernels(cfg, t + 1), Hkv, D] the sequence's compressed keys in f64. blocks [Hkv,
// cfg.topk]: row t of select_blocks (the same code), for the decode path (decode_attention.h).
template <class T>
void select_token_blocks(const SparseConfig& cfg, const AttentionShape& shape, const T* q_t,
                         const double* kc, int t, int32_t* blocks);

// The block scores S that select_token_blocks ranks, same inputs: [Hkv, num_blocks(cfg, t + 1)],
// +inf forced, -inf without causal kernels. Diagnostics weigh a differing block choice with them.
template <class T>
std::vector<double> score_token_blocks(const SparseConfig& cfg, const AttentionShape& shape,
                                       const T* q_t, const double* kc, int t);

// The same lists for the given tokens only: blocks [B, tokens.size(), Hkv, cfg.topk] (NSA's
// attention recall, train/long_eval.h, samples rows of long sequences).
template <class T>
void select_blocks_compressed_at(const SparseConfig& cfg, const AttentionShape& shape, const T* q,
                                 const T* kc, const std::vector<int>& tokens, int32_t* blocks);

}  // namespace cpu

namespace cuda {

// Device pointers; bf16 as raw bits (see flash_attention.h); `stream` is a cudaStream_t.
// D must be 64 or 128, G <= 128, block_size / kernel_stride a power of two <= 32 and
// num_blocks(cfg, T) <= 4096.
using bf16_bits = uint16_t;

// kc [B, num_kernels(cfg, T), Hkv, D], mean in f32, rounded to bf16.
void compress_keys(const SparseConfig& cfg, const AttentionShape& shape, const bf16_bits* k,
                   bf16_bits* kc, void* stream);

// Scratch that select_blocks needs: the compressed keys plus one chunk of block scores
// (bounded: query tokens are processed in chunks of at most 256 MiB of scores).
size_t select_blocks_workspace_bytes(const SparseConfig& cfg, const AttentionShape& shape);

// blocks [B, T, Hkv, cfg.topk] int32. `workspace` holds select_blocks_workspace_bytes bytes of
// device memory, or is nullptr: then it is taken from cudaMallocAsync on `stream` and freed there.
void select_blocks(const SparseConfig& cfg, const AttentionShape& shape, const bf16_bits* q,
                   const bf16_bits* k, int32_t* blocks, void* stream, void* workspace);

// Steps 2-4 on given compressed keys kc [B, num_kernels(cfg, T), Hkv, D] (contiguous), as
// cpu::select_blocks_compressed. Scratch (one chunk of block scores) from cudaMallocAsync.
void select_blocks_compressed(const SparseConfig& cfg, const AttentionShape& shape,
                              const bf16_bits* q, const bf16_bits* kc, int32_t* blocks,
                              void* stream);

}  // namespace cuda

}  // namespace infllm::attention
