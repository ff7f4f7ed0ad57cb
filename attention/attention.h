// Causal self-attention as a differentiable tensor op, with InfLLM-V2's dense/sparse switch:
// the same q, k, v (same weights) go through dense flash attention for short sequences and
// through block selection + block-sparse flash attention for long ones (docs/infllm_v2.md).
#pragma once

#include <memory>

#include "attention/attention_policy.h"
#include "attention/infllm_v2.h"
#include "attention/nsa.h"
#include "core/tensor.h"

namespace infllm {

// How often the block choices of sparse attention calls equal those of the exact reference
// (f64, lse_stride 1, on the same activations): entries in common / entries chosen, summed over
// calls. A diagnostic (`infllm eval --selection-agreement`): each call copies q and k to the host.
struct SelectionAgreement {
  size_t common = 0, chosen = 0;
  double fraction() const { return chosen == 0 ? 1.0 : double(common) / double(chosen); }
};

// Sees q [B, T, Hq, D] and k [B, T, Hkv, D] (RoPE applied; views on the call's device) of every
// attention call, in call order: one call per layer and forward pass. A diagnostic
// (`infllm eval --long`'s attention recall); unset, it costs nothing.
struct AttentionObserver {
  virtual ~AttentionObserver() = default;
  virtual void observe(const Tensor& q, const Tensor& k) = 0;
};

struct AttentionOptions {
  attention::AttentionMode mode = attention::AttentionMode::automatic;
  attention::SparseConfig sparse;  // also holds dense_len, the switch point
  attention::AttentionVariant variant = attention::AttentionVariant::infllm_v2;
  attention::NsaConfig nsa;  // the nsa variant's window (attention/nsa.h)
  std::shared_ptr<SelectionAgreement> selection_agreement;  // measured when set
  std::shared_ptr<AttentionObserver> observer;              // called when set
  bool operator==(const AttentionOptions&) const = default;
};

// Matmul FLOPs per token of one layer's attention core, forward + backward, averaged over a
// sequence of T tokens, on the path `options` takes at that length (for MFU): Q K^T and P V
// cost 2 D FLOPs per (query head, attended key) each, three times over with the backward.
// Dense: token t attends to t + 1 keys. InfLLM-V2 sparse: at most topk * block_size keys, plus
// the selection's compressed-key scores (forward only, no gradient). NSA: its three branches
// (compressed keys, selected blocks, window) with their gradients.
double attention_flops_per_token(const AttentionOptions& options, int64_t T, int64_t Hq, int64_t D);

// q [B, T, Hq, D], k and v [B, T, Hkv, D] (RoPE already applied) -> [B, T, Hq, D].
// CPU computes f32/f64 (the reference), CUDA bf16. Gradients flow to q, k, v; the block
// selection of the sparse path carries none.
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                        const AttentionOptions& options);

// The same on the fused QKV projection's layout: qkv [B, T, Hq + 2 Hkv, D] holds the q heads,
// then the k heads, then the v heads of each token (RoPE already applied to q and k). On CUDA the
// kernels read the three head ranges in place and the backward writes one packed gradient, so
// nothing is sliced, copied, zero-filled or summed around the attention call.
Tensor causal_attention_packed(const Tensor& qkv, int64_t Hq, int64_t Hkv,
                               const AttentionOptions& options);

// The shape of q [B, T, Hq, D] and k [B, T, Hkv, D], checked (same B, T and D; Hkv divides Hq):
// an infllm::Error naming `op` and both shapes otherwise. scale = 1/sqrt(D).
attention::AttentionShape attention_shape(const char* op, const Tensor& q, const Tensor& k);

// The sparse path's block lists for (q, k): i32 [B, T, Hkv, topk], ascending, -1 padded.
Tensor select_attention_blocks(const Tensor& q, const Tensor& k,
                               const attention::SparseConfig& config);

}  // namespace infllm
