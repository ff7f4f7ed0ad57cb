#include "layers/self_attention.h"

#include <cmath>

#include "attention/cached_attention.h"
#include "autograd/functions.h"
#include "layers/rope.h"

namespace infllm {

SelfAttention::SelfAttention(ParameterFactory& factory, const ModelConfig& config)
    : config_(config),
      wqkv_(register_module("wqkv", std::make_unique<Linear>(
                                        factory, config.d_model,
                                        (config.n_heads + 2 * config.n_kv_heads) * config.head_dim,
                                        config.init_std))),
      wo_(register_module("wo", std::make_unique<Linear>(
                                    factory, config.n_heads * config.head_dim, config.d_model,
                                    config.init_std / std::sqrt(2.0 * double(config.n_layers))))) {
  // Registered after wo, so models without NSA draw the same initial weights as before.
  if (config.attention.variant == attention::AttentionVariant::nsa)
    nsa_ = &register_module("nsa", std::make_unique<NsaParameters>(factory, config));
}

Tensor SelfAttention::forward(const Tensor& x) const {
  return project_out(attend(project_qkv(x), project_gates(x)));
}

// The projection's rows stay packed [q heads | k heads | v heads] from the matmul through RoPE
// (q and k heads only) into attention: no slice is copied, no slice gradient zero-filled.
Tensor SelfAttention::project_qkv(const Tensor& x, int64_t pos_offset) const {
  int64_t Hq = config_.n_heads, Hkv = config_.n_kv_heads;
  Tensor qkv = reshape(wqkv_.forward(x), {x.size(0), x.size(1), Hq + 2 * Hkv, config_.head_dim});
  return rope(qkv, config_.rope_theta, pos_offset, Hq + Hkv);
}

Tensor SelfAttention::project_gates(const Tensor& x) const {
  return nsa_ != nullptr ? nsa_->gate_logits(x) : Tensor();
}

Tensor SelfAttention::attend(const Tensor& qkv, const Tensor& gate_logits) const {
  const AttentionOptions& options = config_.attention;
  const int64_t Hq = config_.n_heads, Hkv = config_.n_kv_heads;
  Tensor out;
  if (nsa_ != nullptr &&
      attention::use_sparse(options.mode, int(qkv.size(1)), options.sparse.dense_len)) {
    INFLLM_CHECK(gate_logits.defined(),
                 "SelfAttention: the NSA variant needs the gate logits (project_gates)");
    out = nsa_attention(slice(qkv, 2, 0, Hq), slice(qkv, 2, Hq, Hq + Hkv),
                        slice(qkv, 2, Hq + Hkv, Hq + 2 * Hkv), gate_logits, nsa_->weights(),
                        options.sparse, options.nsa);
  } else {
    out = causal_attention_packed(qkv, Hq, Hkv, options);
  }
  return reshape(out, {qkv.size(0), qkv.size(1), Hq * config_.head_dim});
}

Tensor SelfAttention::attend_cached(const Tensor& qkv, const KvCache::Layer& cache,
                                    int64_t position, KvCache::DecodeRecord* record) const {
  INFLLM_CHECK(nsa_ == nullptr,
               "SelfAttention: the NSA variant has no cached decode (generate recomputes)");
  const int64_t Hq = config_.n_heads, D = config_.head_dim;
  Tensor q = qkv.reshape({qkv.size(2), D}).slice(0, 0, Hq).contiguous();
  Tensor blocks;
  Tensor out = decode_attention(q, cache.k, cache.v, cache.kc, position, config_.attention,
                                record != nullptr ? &blocks : nullptr);
  if (record != nullptr) *record = KvCache::DecodeRecord{q, blocks};
  return out.reshape({1, 1, Hq * D});
}

Tensor SelfAttention::project_out(const Tensor& attended) const {
  return wo_.forward(attended);
}

}  // namespace infllm
