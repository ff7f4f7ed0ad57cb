// The CPU-only build's attention/*.cu: the same cuda:: entry points, each an error
// (core/no_cuda.h).
#include "core/no_cuda.h"
#include "attention/decode_attention.h"
#include "attention/flash_attention.h"
#include "attention/infllm_v2.h"

namespace infllm::attention::cuda {

void attention_forward(const AttentionShape&, const bf16_bits*, const bf16_bits*, const bf16_bits*,
                       BlockList, bf16_bits*, float*, void*) {
  no_cuda_backend("attention::cuda::attention_forward");
}
void attention_backward(const AttentionShape&, const bf16_bits*, const bf16_bits*, const bf16_bits*,
                        const bf16_bits*, const float*, const bf16_bits*, BlockList, bf16_bits*,
                        bf16_bits*, bf16_bits*, void*) {
  no_cuda_backend("attention::cuda::attention_backward");
}

void compress_keys(const SparseConfig&, const AttentionShape&, const bf16_bits*, bf16_bits*,
                   void*) {
  no_cuda_backend("attention::cuda::compress_keys");
}
size_t select_blocks_workspace_bytes(const SparseConfig&, const AttentionShape&) {
  no_cuda_backend("attention::cuda::select_blocks_workspace_bytes");
}
void select_blocks(const SparseConfig&, const AttentionShape&, const bf16_bits*, const bf16_bits*,
                   int32_t*, void*, void*) {
  no_cuda_backend("attention::cuda::select_blocks");
}
void select_blocks_compressed(const SparseConfig&, const AttentionShape&, const bf16_bits*,
                              const bf16_bits*, int32_t*, void*) {
  no_cuda_backend("attention::cuda::select_blocks_compressed");
}

size_t decode_attention_workspace_bytes(const DecodeShape&, int, int, bool) {
  no_cuda_backend("attention::cuda::decode_attention_workspace_bytes");
}
void decode_attention(const DecodeShape&, const bf16_bits*, const bf16_bits*, const bf16_bits*,
                      const int32_t*, int, int, bf16_bits*, void*, void*) {
  no_cuda_backend("attention::cuda::decode_attention");
}
size_t select_decode_blocks_workspace_bytes(const SparseConfig&, const DecodeShape&) {
  no_cuda_backend("attention::cuda::select_decode_blocks_workspace_bytes");
}
void select_decode_blocks(const SparseConfig&, const DecodeShape&, const bf16_bits*,
                          const bf16_bits*, int32_t*, void*, void*) {
  no_cuda_backend("attention::cuda::select_decode_blocks");
}
void append_compressed_keys(const SparseConfig&, int, int, const bf16_bits*, KernelRange,
                            bf16_bits*, void*) {
  no_cuda_backend("attention::cuda::append_compressed_keys");
}

}  // namespace infllm::attention::cuda
