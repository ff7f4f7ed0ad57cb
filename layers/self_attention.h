// Grouped-query self-attention: one fused qkv projection, RoPE on q and k, causal attention
// (dense, or sparse by the switch: InfLLM-V2's parameter-free path or the NSA variant with its
// own parameters), output projection.
#pragma once

#include "layers/kv_cache.h"
#include "layers/linear.h"
#include "layers/model_config.h"
#include "layers/nsa_parameters.h"

namespace infllm {

class SelfAttention : public Module {
 public:
  // `config` is the model's and must outlive the layer: changing its attention options (eval
  // through the other path) takes effect on the next forward.
  SelfAttention(ParameterFactory& factory, const ModelConfig& config);
  Tensor forward(const Tensor& x) const;  // [B, T, d_model] -> [B, T, d_model]

  // forward = project_out(attend(project_qkv(x), project_gates(x))), in steps so that
  // activation checkpointing can recompute the projections and keep the attention core.
  // -> q, k (rotated at positions pos_offset + t), v: [B, T, Hq + 2 Hkv, D]
  Tensor project_qkv(const Tensor& x, int64_t pos_offset = 0) const;
  // The NSA variant's gate logits [B, T, Hq, 3]; an undefined tensor for the other variants.
  Tensor project_gates(const Tensor& x) const;
  // -> [B, T, Hq * D]; gate_logits are needed when the NSA variant takes its sparse path.
  Tensor attend(const Tensor& qkv, const Tensor& gate_logits = Tensor()) const;
  Tensor project_out(const Tensor& attended) const;  // -> [B, T, d_model]
  // One new token's attention over a KV cache layer that already holds it at `position`:
  // qkv [1, 1, Hq + 2 Hkv, D] -> [1, 1, Hq * D] (attention/cached_attention.h). InfLLM-V2 only.
  // `record`, when given, receives the query and block lists it read (KvCache::DecodeRecord).
  Tensor attend_cached(const Tensor& qkv, const KvCache::Layer& cache, int64_t position,
                       KvCache::DecodeRecord* record = nullptr) const;

 private:
  const ModelConfig& config_;
  Linear& wqkv_;                  // [(Hq + 2 Hkv) * head_dim, d_model]
  Linear& wo_;                    // [d_model, Hq * head_dim], init scaled by 1/sqrt(2 n_layers)
  NsaParameters* nsa_ = nullptr;  // the NSA variant only (config.attention.variant)
};

}  // namespace infllm
