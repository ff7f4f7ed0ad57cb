// What the CUDA files of InfLLM-V2's stage 1 share (internal to the attention library):
//   infllm_v2.cu         the entry points of infllm_v2.h: checks, workspace, chunks of query tokens
//   infllm_v2_scores.cu  compressed keys (step 1) and block scores (steps 2-3)
//   infllm_v2_topk.cu    the top-k block lists (step 4)
// A compressed key ("ckey") is the mean of the keys of one span of kernel_size tokens (the paper's
// "semantic kernel"; SparseConfig keeps the paper's names kernel_size and kernel_stride); here
// "kernel" means a CUDA kernel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "attention/infllm_v2.h"

namespace infllm::attention::cuda {

using bf16 = __nv_bfloat16;

// The block-score kernel's CTA: (token, head) rows of one KV group, 16 MMA rows per warp.
constexpr int kScoreWarpgroups = 2;
constexpr int kScoreRows = 64 * kScoreWarpgroups;

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

struct TopkArgs {
  const float* scores;  // [B, chunk.len, Hkv, n_blocks]
  int32_t* blocks;      // [B, T, Hkv, topk]
  SparseConfig cfg;
  Chunk chunk;
  int T, Hkv, n_blocks, rows;
};

// infllm_v2_scores.cu: kc [B, nk, Hkv, D] = the means of k ([B, T, Hkv, D], token_row elements
// between tokens) over each compressed key's span; the block scores of one chunk (D = 64 or 128).
void launch_compress_keys(const bf16* k, bf16* kc, int B, int T, int Hkv, int D, int64_t token_row,
                          int nk, int span, int stride, cudaStream_t stream);
void launch_block_scores(int D, const ScoreArgs& a, int B, cudaStream_t stream);
// infllm_v2_topk.cu: the block lists of one chunk from its block scores.
void launch_topk(const TopkArgs& a, cudaStream_t stream);

}  // namespace infllm::attention::cuda
