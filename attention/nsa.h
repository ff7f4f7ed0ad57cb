// NSA-style sparse attention (Native Sparse Attention, Yuan et al. 2025, arXiv 2502.11089) built
// on this folder's ops and kernels, the third attention variant beside dense and InfLLM-V2
// (docs/nsa.md). Unlike InfLLM-V2 it has parameters of its own: a learned compression of each
// kernel's keys and of its values, and per-head gates over three branches.
//
// Shapes (G = Hq / Hkv, l = kernel_size, s = kernel_stride, nk = num_kernels(cfg, T)):
//   q [B, T, Hq, D], k and v [B, T, Hkv, D] (RoPE already applied to q and k)
//   kc, vc [B, nk, Hkv, D]: kernel i covers tokens [i s, i s + l), per KV head h
//       kc[b, i, h] = w2[h] gelu(w1[h] flatten(k[b, i s .. i s + l - 1, h] + pe[h]))
//   gate_logits [B, T, Hq, 3]: (compressed, selected, window) per head, before the sigmoid
// Branches, each a causal softmax attention of q over:
//   compressed: the compressed keys/values whose kernel ends at or before the token
//               (i s + l - 1 <= t); tokens before the first kernel's end get zeros;
//   selected:   the keys of the token's top-k 64-token blocks, ranked by the compressed
//               attention probabilities summed over the G heads of a group and max-pooled to
//               blocks (InfLLM-V2's stage 1 on kc instead of mean-pooled keys), with the first
//               init_blocks blocks and the window_size / block_size blocks ending at the
//               token's own forced;
//   window:     the keys of the window_size / block_size most recent blocks (the token's own
//               block included): at block granularity, between window_size - block_size + 1
//               and window_size tokens.
// out = sigmoid(g_c) o_cmp + sigmoid(g_s) o_slc + sigmoid(g_w) o_win, per (token, head).
// Gradients flow to q, k, v, the compression parameters and the gate logits; the block lists
// carry none. CPU computes f32/f64 (the reference), CUDA bf16, through the same composition.
#pragma once

#include <memory>
#include <span>

#include "attention/infllm_v2.h"
#include "core/config_check.h"
#include "core/enum_names.h"
#include "core/tensor.h"

namespace infllm::attention {

// What the sparse side of the dense/sparse switch runs (recipe key attention.variant).
enum class AttentionVariant {
  infllm_v2,  // InfLLM-V2's parameter-free block-sparse attention (infllm_v2.h)
  nsa,        // this file's NSA attention, with parameters of its own
};
// "infllm_v2", "nsa": the recipe's names. Parse with from_string (core/enum_names.h).
std::span<const EnumName<AttentionVariant>> enum_names(AttentionVariant);

// Sees, for every NSA attention call (one per layer and forward pass, in call order), q
// [B, T, Hq, D] and k [B, T, Hkv, D] (RoPE applied) and the learned compressed keys kc
// [B, num_kernels, Hkv, D] the selection ranks blocks with; views on the call's device. A
// diagnostic (`infllm eval --long`'s attention recall of NSA's own selection); unset, it costs
// nothing.
struct NsaObserver {
  virtual ~NsaObserver() = default;
  virtual void observe(const Tensor& q, const Tensor& k, const Tensor& kc) = 0;
};

// The NSA variant's own settings; its compression and selection use the SparseConfig's
// kernel_size, kernel_stride, block_size, init_blocks, window_size (the selection's forced
// local blocks), topk and lse_stride.
struct NsaConfig {
  int window_size = 512;  // sliding-window branch, in tokens: a whole number of blocks
  std::shared_ptr<NsaObserver> observer = nullptr;  // called when set
  bool operator==(const NsaConfig&) const = default;
};

// The NSA rules beside check_sparse_config's, in the words of `check` (field "nsa_window" for
// NsaConfig::window_size, as the recipe key attention.nsa_window).
void check_nsa_config(const NsaConfig& nsa, const SparseConfig& cfg, const ConfigCheck& check);
// Both configs for a direct call of `op`.
void check_nsa_config(const char* op, const NsaConfig& nsa, const SparseConfig& cfg);

}  // namespace infllm::attention

namespace infllm {

// One learned compression (of the keys or of the values), per KV head: pe [Hkv, l, D] (the
// intra-kernel position encoding), w1 [Hkv, D, l D], w2 [Hkv, D, D] (an MLP of hidden width D).
struct NsaCompression {
  Tensor pe, w1, w2;
};

struct NsaWeights {
  NsaCompression key, value;
};

// x [B, T, Hkv, D] -> [B, num_kernels(cfg, T), Hkv, D]; T < kernel_size gives nk = 0 rows.
Tensor nsa_compress(const Tensor& x, const NsaCompression& c, const attention::SparseConfig& cfg);

// The compressed branch: -> [B, T, Hq, D]. Runs the dense causal attention kernel on the queries
// folded so that one attention row holds the s tokens that see the same kernels (docs/nsa.md).
Tensor nsa_compressed_attention(const Tensor& q, const Tensor& kc, const Tensor& vc,
                                const attention::SparseConfig& cfg);

// The selected branch's lists: i32 [B, T, Hkv, cfg.topk], ascending, -1 padded.
Tensor nsa_select_blocks(const Tensor& q, const Tensor& kc, const attention::SparseConfig& cfg);

// The window branch's lists: i32 [B, T, Hkv, window_size / block_size], ascending, -1 padded.
Tensor sliding_window_blocks(int64_t B, int64_t T, int64_t Hkv, int block_size, int window_size,
                             Device device);

// The three branch outputs [B, T, Hq, D] and the selected lists, before the gates.
struct NsaBranches {
  Tensor compressed, selected, window, blocks;
};
NsaBranches nsa_branches(const Tensor& q, const Tensor& k, const Tensor& v, const NsaWeights& w,
                         const attention::SparseConfig& cfg, const attention::NsaConfig& nsa);

// The whole NSA attention: -> [B, T, Hq, D].
Tensor nsa_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gate_logits,
                     const NsaWeights& w, const attention::SparseConfig& cfg,
                     const attention::NsaConfig& nsa);

}  // namespace infllm
