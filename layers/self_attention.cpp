#include "layers/self_attention.h"

#include <cmath>

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
                                    config.init_std / std::sqrt(2.0 * double(config.n_layers))))) {}

Tensor SelfAttention::forward(const Tensor& x) const {
  int64_t B = x.size(0), T = x.size(1), D = config_.head_dim;
  int64_t Hq = config_.n_heads, Hkv = config_.n_kv_heads;
  Tensor qkv = reshape(wqkv_.forward(x), {B, T, Hq + 2 * Hkv, D});
  Tensor q = rope(slice(qkv, 2, 0, Hq), config_.rope_theta);
  Tensor k = rope(slice(qkv, 2, Hq, Hq + Hkv), config_.rope_theta);
  Tensor v = contiguous(slice(qkv, 2, Hq + Hkv, Hq + 2 * Hkv));
  Tensor out = causal_attention(q, k, v, config_.attention);
  return wo_.forward(reshape(out, {B, T, Hq * D}));
}

}  // namespace infllm
