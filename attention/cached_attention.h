// Attention of one new token over a KV cache, as tensors: attention.h's dense/sparse switch
// applied to the row the token is, on the kernels of attention/decode_attention.h. For
// generation: no gradient is recorded.
#pragma once

#include <cstdint>

#include "attention/attention.h"
#include "core/tensor.h"

namespace infllm {

// Whether the token at `position` attends sparsely: a full-sequence forward of position + 1
// tokens would take the InfLLM-V2 sparse path (the NSA variant has no cached decode).
bool decode_uses_sparse(const AttentionOptions& options, int64_t position);

// q [Hq, D] (RoPE applied at `position`); k, v [L, Hkv, D] caches holding positions 0 ..
// position; kc [Lk, Hkv, D] the compressed keys completed by them (read on the sparse path only;
// may be undefined when it is never taken). -> [Hq, D]. CPU f32/f64, CUDA bf16. `selected`, when
// given, receives the block lists the sparse path attended (select_decode_blocks' [Hkv, topk] on
// q's device), or an undefined tensor on the dense path: what diagnostics compare with a
// full-sequence forward's choice.
Tensor decode_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& kc,
                        int64_t position, const AttentionOptions& options,
                        Tensor* selected = nullptr);

// The sparse path's block lists for the token: i32 [Hkv, config.topk], ascending, -1 padded.
Tensor select_decode_blocks(const Tensor& q, const Tensor& kc, int64_t position,
                            const attention::SparseConfig& config);

// Writes into kc the compressed keys that the keys of positions [begin, end) complete, from the
// cache k [L, Hkv, D] (positions 0 .. end - 1 filled).
void append_compressed_keys(const Tensor& k, const Tensor& kc, int64_t begin, int64_t end,
                            const attention::SparseConfig& config);

}  // namespace infllm
