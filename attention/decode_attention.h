// Attention of one new token over a KV cache (generation), dense or InfLLM-V2 sparse, CPU
// reference and CUDA. The tensor-level op that picks the path is attention/cached_attention.h.
//
// Layouts of one sequence's cache of one layer (row-major, G = Hq / Hkv):
//   q       [Hq, D]        the new token's query, RoPE applied at its position p
//   k, v    [L, Hkv, D]    rotated keys and values of positions 0 .. p (rows past p unused)
//   kc      [Lk, Hkv, D]   compressed keys: kc[i] = mean of k over tokens
//                          [i*kernel_stride, i*kernel_stride + kernel_size) (infllm_v2.h, step 1),
//                          rows i < num_kernels(cfg, p + 1) filled
//   blocks  [Hkv, topk]    int32: the KV blocks the token attends to per group, ascending, -1
//                          padded: exactly row t = p of infllm_v2.h's block lists
//   out     [Hq, D]
//
// Dense: the token attends to keys 0 .. p. Sparse: to the keys <= p of its selected blocks (its
// own block causal inside), with one softmax over their union, as attention_forward does for
// that row. The selection is infllm_v2.h's steps 2-4 for row t = p over the causal compressed
// keys, so a decode step chooses what a full-sequence forward chooses for its last row.
#pragma once

#include <cstddef>
#include <cstdint>

#include "attention/infllm_v2.h"

namespace infllm::attention {

struct DecodeShape {
  int Hq = 0, Hkv = 0, D = 0;
  float scale = 0.f;  // usually 1/sqrt(D)
  int position = 0;   // p: the new token's position; keys 0 .. p are in the cache
};

// Throws infllm::Error naming `op` and the bad field.
void check_decode_shape(const char* op, const DecodeShape& shape);

// The first compressed key completed by tokens [begin, end) and one past the last: a key i is
// complete once token i*kernel_stride + kernel_size - 1 is in the cache.
struct KernelRange {
  int first = 0, end = 0;
};
inline KernelRange completed_kernels(const SparseConfig& cfg, int begin, int end) {
  return {num_kernels(cfg, begin), num_kernels(cfg, end)};
}

namespace cpu {

// T = float or double; sums in double. blocks == nullptr: dense.
template <class T>
void decode_attention(const DecodeShape& shape, const T* q, const T* k, const T* v,
                      const int32_t* blocks, int max_blocks, int block_size, T* out);

// blocks [Hkv, cfg.topk] for the token at shape.position from kc (the causal compressed keys).
// The same f64 code as cpu::select_blocks for that row.
template <class T>
void select_decode_blocks(const SparseConfig& cfg, const DecodeShape& shape, const T* q,
                          const T* kc, int32_t* blocks);

// kc rows [range.first, range.end) from k (Hkv * D values per token), as cpu::compress_keys
// rounds them: the f64 mean cast to T.
template <class T>
void append_compressed_keys(const SparseConfig& cfg, int Hkv, int D, const T* k, KernelRange range,
                            T* kc);

}  // namespace cpu

namespace cuda {

// Device pointers, bf16 as raw bits; f32 math; `stream` is a cudaStream_t. D must be 64 or 128
// and G <= 16.
using bf16_bits = uint16_t;

// Split over the cache like flash-decoding: each CTA folds a chunk of 64-key tiles of one KV group
// into a partial softmax (max, sum, unnormalized output) in `workspace`, a second kernel combines
// the chunks. blocks: device [Hkv, max_blocks] or nullptr (dense).
size_t decode_attention_workspace_bytes(const DecodeShape& shape, int max_blocks, int block_size,
                                        bool sparse);
void decode_attention(const DecodeShape& shape, const bf16_bits* q, const bf16_bits* k,
                      const bf16_bits* v, const int32_t* blocks, int max_blocks, int block_size,
                      bf16_bits* out, void* workspace, void* stream);

// Steps 2-4 for the one token, as the training selection computes row t = p: scores of the causal
// compressed keys (exact softmax normalizer: lse_stride does not apply to one row), pooled to
// blocks, top-k with ties to the lower block index. blocks [Hkv, cfg.topk] on the device.
size_t select_decode_blocks_workspace_bytes(const SparseConfig& cfg, const DecodeShape& shape);
void select_decode_blocks(const SparseConfig& cfg, const DecodeShape& shape, const bf16_bits* q,
                          const bf16_bits* kc, int32_t* blocks, void* workspace, void* stream);

// kc rows [range.first, range.end) from k, summed in f32 in token order and rounded to bf16 as
// cuda::compress_keys does (bit for bit).
void append_compressed_keys(const SparseConfig& cfg, int Hkv, int D, const bf16_bits* k,
                            KernelRange range, bf16_bits* kc, void* stream);

}  // namespace cuda

}  // namespace infllm::attention
