// Causal flash attention with GQA: one kernel family, two schedules (docs/attention_kernels.md).
//
// Layouts (row-major; q/dq and k/v/dk/dv may have a larger token stride, see AttentionShape):
//   q, out, dq, dout  [B, T, Hq,  D]
//   k, v, dk, dv      [B, T, Hkv, D]      G = Hq / Hkv query heads share one KV head
//   lse               [B, Hq, T]          natural-log log-sum-exp of each softmax row (f32)
//   blocks            [B, T, Hkv, max_blocks] int32: the KV blocks (of block_size tokens) that
//                     token t of KV group g attends to, ascending, padded with -1 at the end.
//                     A list always contains t's own block (causal-masked inside); blocks after
//                     t's own block are ignored, duplicates count once.
// Dense (blocks == nullptr): row t attends to keys 0..t. Sparse: row t attends to the keys of
// its selected blocks that are <= t, with ONE softmax over their union.
// Forward saves lse; backward recomputes the probabilities from it.
#pragma once

#include <cstdint>

namespace infllm::attention {

struct AttentionShape {
  int B = 0, T = 0, Hq = 0, Hkv = 0, D = 0;
  float scale = 0.f;  // usually 1/sqrt(D)
  // CUDA only: elements between consecutive tokens of q and dq (q_row) and of k, v, dk, dv
  // (kv_row), whole heads (multiples of D); 0 means contiguous (Hq * D, Hkv * D). Lets the kernels
  // read q, k, v straight out of the fused QKV projection [B, T, Hq + 2 Hkv, D] and write the
  // gradients back into one tensor.
  int64_t q_row = 0, kv_row = 0;
};

struct BlockList {
  const int32_t* blocks = nullptr;  // nullptr: dense causal attention
  int max_blocks = 0;
  int block_size = 64;
};

// Throws infllm::Error naming `op` and the bad field when the shape or block list is unusable.
void check_attention_shape(const char* op, const AttentionShape& shape, const BlockList& blocks);

namespace cpu {

// Reference implementation: plain loops, OpenMP over heads. T = float or double (gradcheck).
template <class T>
void attention_forward(const AttentionShape& shape, const T* q, const T* k, const T* v,
                       BlockList blocks, T* out, T* lse);

// dq/dk/dv are overwritten (not accumulated).
template <class T>
void attention_backward(const AttentionShape& shape, const T* q, const T* k, const T* v,
                        const T* out, const T* lse, const T* dout, BlockList blocks, T* dq, T* dk,
                        T* dv);

}  // namespace cpu

namespace cuda {

// Device pointers; bf16 values travel as their raw 16 bits so that plain .cpp files can include
// this header. `stream` is a cudaStream_t. D must be 64 or 128; the sparse path needs
// block_size == 64 and G <= 16.
using bf16_bits = uint16_t;

void attention_forward(const AttentionShape& shape, const bf16_bits* q, const bf16_bits* k,
                       const bf16_bits* v, BlockList blocks, bf16_bits* out, float* lse,
                       void* stream);

// dq/dk/dv are overwritten. Scratch memory (row sums, the sparse path's block -> token index,
// per-split partial sums) comes from cudaMallocAsync on `stream` and is freed on it.
void attention_backward(const AttentionShape& shape, const bf16_bits* q, const bf16_bits* k,
                        const bf16_bits* v, const bf16_bits* out, const float* lse,
                        const bf16_bits* dout, BlockList blocks, bf16_bits* dq, bf16_bits* dk,
                        bf16_bits* dv, void* stream);

}  // namespace cuda

}  // namespace infllm::attention
