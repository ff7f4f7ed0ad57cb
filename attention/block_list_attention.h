// Causal attention over block lists the caller chose, as a differentiable tensor op: the
// selected and sliding-window branches of NSA (attention/nsa.h) run the block-sparse kernels of
// flash_attention.h through it, with lists that InfLLM-V2's own selection did not make.
#pragma once

#include "core/tensor.h"

namespace infllm {

// q [B, T, Hq, D], k and v [B, T, Hkv, D], blocks i32 [B, T, Hkv, max_blocks] (the BlockList
// layout of flash_attention.h: ascending, -1 padded, on q's device) -> [B, T, Hq, D]. Row t
// attends to the keys <= t of its listed blocks of `block_size` tokens, with one softmax over
// their union. CPU computes f32/f64, CUDA bf16 (block_size 64, G <= 16). Gradients flow to q,
// k, v; the lists carry none.
Tensor block_list_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& blocks,
                            int block_size);

}  // namespace infllm
