// Attention recall (`infllm eval --long`, docs/experiments.md): per layer, the share of the
// dense softmax mass (q.k / sqrt(D) over every causal key, f64) that a sparse path's selected
// blocks capture, on the activations of one forward pass, averaged over sampled query rows and
// every query head. The selection is the one the evaluated path makes, recomputed exactly (f64
// on the host, lse_stride 1) from the layer's q and k copied to the host:
//
//   infllm_v2  InfLLM-V2's stage 1 on mean-pooled keys (attention/infllm_v2.h select_blocks_at),
//              measured on every attention call that reports to AttentionOptions::observer:
//              the sparse path, and the dense path too (what InfLLM-V2 would pick there);
//   nsa        NSA's selected branch: the same stage 1 on the layer's learned compressed keys kc
//              (select_blocks_compressed_at), measured on every NSA call (NsaConfig::observer).
//
// Besides the selected blocks, the union of the keys the path reads one key at a time: for
// infllm_v2 the selected blocks themselves (its local window is forced among them); for nsa the
// selected blocks plus the window branch's blocks. NSA's compressed branch is not counted: it
// sees the causal keys only through learned summaries of kernel_size-token kernels, and
// counting those would make the union cover, by construction, every key but the at most
// kernel_stride - 1 newest (those after the last complete kernel).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attention/infllm_v2.h"
#include "attention/nsa.h"
#include "layers/transformer.h"

namespace infllm::train {

struct AttentionRecall {
  std::string selection;         // "infllm_v2", "nsa", or "none" when no call reported (no layers)
  std::vector<double> by_layer;  // mass in the selected blocks
  std::vector<double> union_by_layer;  // mass in every key read one by one (see above)
};

// One forward pass of tokens i32 [1, T] through `model` as configured (its attention options
// decide the path), with probes installed for that pass only; `rows` query rows per layer
// (recall_rows). Gradients are not recorded.
AttentionRecall measure_attention_recall(TransformerLM& model, const Tensor& tokens, int64_t rows);

// `count` rows spread evenly over [first, T), first = topk * block_size, the first position
// whose causal blocks outnumber topk; over [0, T) when T has no such position.
std::vector<int> recall_rows(const attention::SparseConfig& config, int T, int64_t count);

// ---- The pieces, for tests. q [T, Hq, D], k [T, Hkv, D], kc [num_kernels, Hkv, D] of one
// sequence, row-major f32. ----

// Mean over `rows` and the Hq heads of the dense causal softmax mass on the keys of the blocks
// listed for that row and head's KV group: blocks [rows.size(), Hkv, width] i32, -1 entries
// ignored, no block listed twice. Keys after the row are never counted.
double dense_mass_in_blocks(int block_size, int T, int Hq, int Hkv, int D, const float* q,
                            const float* k, const std::vector<int>& rows, const int32_t* blocks,
                            int width);

// InfLLM-V2: the mass in the blocks its selection picks from q and k.
double attention_recall(const attention::SparseConfig& config, int T, int Hq, int Hkv, int D,
                        const float* q, const float* k, const std::vector<int>& rows);

// NSA: the mass in the blocks its selected branch picks from q and kc, and in those together
// with the window branch's window_size / block_size most recent blocks.
struct NsaRecall {
  double selected = 0, branch_union = 0;
};
NsaRecall nsa_attention_recall(const attention::SparseConfig& config,
                               const attention::NsaConfig& nsa, int T, int Hq, int Hkv, int D,
                               const float* q, const float* k, const float* kc,
                               const std::vector<int>& rows);

}  // namespace infllm::train
