// CUDA stage 1 of InfLLM-V2 (infllm_v2.h): the entry points. select_blocks compresses the keys
// once (infllm_v2_scores.cu), then, per chunk of query tokens (interleaved stripes, Chunk), scores
// the blocks (infllm_v2_scores.cu) and selects the top-k lists (infllm_v2_topk.cu). The block
// scores of a chunk are the only intermediate in device memory, bounded by kScoreChunkBytes.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "attention/infllm_v2.h"
#include "attention/infllm_v2_stage1.cuh"
#include "core/cuda_check.h"
#include "core/error.h"

namespace infllm::attention::cuda {
namespace {

constexpr size_t kScoreChunkBytes = size_t(256) << 20;

void check_inputs(const char* op, const SparseConfig& cfg, const AttentionShape& s) {
  check_sparse_config(op, cfg);
  check_attention_shape(op, s, BlockList{});
  INFLLM_CHECK(s.D == 64 || s.D == 128, op, ": head dim D=", s.D,
               " is not supported by the CUDA kernels (64 or 128)");
  const int G = s.Hq / s.Hkv, r = cfg.kernels_per_block();
  INFLLM_CHECK(G <= kScoreRows, op, ": GQA group G=Hq/Hkv=", G, " exceeds ", kScoreRows);
  INFLLM_CHECK(r <= 32 && (r & (r - 1)) == 0, op, ": block_size/kernel_stride=", r,
               " must be a power of two <= 32 (blocks are pooled within one warp)");
  INFLLM_CHECK(int64_t(num_kernels(cfg, s.T)) * s.Hkv * s.D < (int64_t(1) << 31), op, ": T=", s.T,
               " gives more than 2^31 compressed-key elements per sequence (32-bit offsets)");
}

size_t kc_bytes(const SparseConfig& cfg, const AttentionShape& s) {
  const size_t bytes = size_t(s.B) * num_kernels(cfg, s.T) * s.Hkv * s.D * sizeof(bf16);
  return (bytes + 255) / 256 * 256;
}

int stripes(const AttentionShape& s) {
  return (s.T + kStripe - 1) / kStripe;
}

// Stripes per chunk: the block scores of one chunk fit kScoreChunkBytes.
int chunk_stripes(const SparseConfig& cfg, const AttentionShape& s) {
  const size_t per_stripe = size_t(s.B) * kStripe * s.Hkv * num_blocks(cfg, s.T) * sizeof(float);
  return int(std::clamp<size_t>(kScoreChunkBytes / per_stripe, 1, size_t(stripes(s))));
}

// Bytes of block scores one chunk of query tokens writes (the part of the workspace after kc).
size_t score_chunk_bytes(const SparseConfig& cfg, const AttentionShape& s) {
  return size_t(chunk_stripes(cfg, s)) * kStripe * s.B * s.Hkv * num_blocks(cfg, s.T) *
         sizeof(float);
}

// Steps 2-4 from the compressed keys kc [B, nk, Hkv, D]: per chunk of query tokens, the
// block scores into `scores` (chunk_stripes' bytes), then the top-k lists.
void score_and_select(const SparseConfig& cfg, const AttentionShape& s, const bf16_bits* q,
                      const bf16* kc, float* scores, int32_t* blocks, cudaStream_t stream) {
  const int G = s.Hq / s.Hkv, n_blocks = num_blocks(cfg, s.T);
  const int total = stripes(s), count = (total + chunk_stripes(cfg, s) - 1) / chunk_stripes(cfg, s);
  for (int index = 0; index < count; ++index) {
    const Chunk chunk{index, count, (total - index + count - 1) / count * kStripe};
    ScoreArgs sa{reinterpret_cast<const bf16*>(q),
                 kc,
                 scores,
                 cfg,
                 s.T,
                 s.Hq,
                 s.Hkv,
                 G,
                 num_kernels(cfg, s.T),
                 s.q_row > 0 ? s.q_row : int64_t(s.Hq) * s.D,
                 chunk,
                 n_blocks,
                 kScoreRows / G,
                 float(s.scale * 1.4426950408889634)};
    launch_block_scores(s.D, sa, s.B, stream);
    launch_topk(TopkArgs{scores, blocks, cfg, chunk, s.T, s.Hkv, n_blocks, s.B * chunk.len * s.Hkv},
                stream);
  }
}

}  // namespace

void compress_keys(const SparseConfig& cfg, const AttentionShape& s, const bf16_bits* k,
                   bf16_bits* kc, void* stream) {
  check_sparse_config("infllm_v2 cuda::compress_keys", cfg);
  check_attention_shape("infllm_v2 cuda::compress_keys", s, BlockList{});
  const int nk = num_kernels(cfg, s.T);
  if (nk == 0) return;
  launch_compress_keys(reinterpret_cast<const bf16*>(k), reinterpret_cast<bf16*>(kc), s.B, s.T,
                       s.Hkv, s.D, s.kv_row > 0 ? s.kv_row : int64_t(s.Hkv) * s.D, nk,
                       cfg.kernel_size, cfg.kernel_stride, static_cast<cudaStream_t>(stream));
}

size_t select_blocks_workspace_bytes(const SparseConfig& cfg, const AttentionShape& s) {
  check_inputs("infllm_v2 cuda::select_blocks_workspace_bytes", cfg, s);
  return kc_bytes(cfg, s) + score_chunk_bytes(cfg, s);
}

void select_blocks(const SparseConfig& cfg, const AttentionShape& s, const bf16_bits* q,
                   const bf16_bits* k, int32_t* blocks, void* stream_ptr, void* workspace) {
  check_inputs("infllm_v2 cuda::select_blocks", cfg, s);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  void* owned = nullptr;
  if (workspace == nullptr) {
    CUDA_CHECK(cudaMallocAsync(&owned, select_blocks_workspace_bytes(cfg, s), stream));
    workspace = owned;
  }
  bf16* kc = static_cast<bf16*>(workspace);
  float* scores = reinterpret_cast<float*>(static_cast<char*>(workspace) + kc_bytes(cfg, s));
  compress_keys(cfg, s, k, reinterpret_cast<bf16_bits*>(kc), stream);
  score_and_select(cfg, s, q, kc, scores, blocks, stream);
  if (owned != nullptr) CUDA_CHECK(cudaFreeAsync(owned, stream));
}

void select_blocks_compressed(const SparseConfig& cfg, const AttentionShape& s, const bf16_bits* q,
                              const bf16_bits* kc, int32_t* blocks, void* stream_ptr) {
  check_inputs("infllm_v2 cuda::select_blocks_compressed", cfg, s);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  float* scores = nullptr;
  CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&scores), score_chunk_bytes(cfg, s), stream));
  score_and_select(cfg, s, q, reinterpret_cast<const bf16*>(kc), scores, blocks, stream);
  CUDA_CHECK(cudaFreeAsync(scores, stream));
}

}  // namespace infllm::attention::cuda
