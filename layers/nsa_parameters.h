// The NSA variant's parameters of one attention layer (attention/nsa.h, docs/nsa.md): the
// learned compression of the keys and of the values, and the per-head gate projection. Inside
// SelfAttention they are named
//   attention.nsa.compress_k.{pe, w1, w2}, attention.nsa.compress_v.{pe, w1, w2},
//   attention.nsa.gate.weight
// so a finetune from a dense checkpoint loads every pretrained tensor and starts these at init.
// NSA's paper does not give an initialization; every tensor here takes the model's one rule,
// normal(0, init_std), as the projections do (docs/nsa.md says what that implies).
#pragma once

#include "attention/nsa.h"
#include "layers/linear.h"
#include "layers/model_config.h"

namespace infllm {

// One compression, per KV head: pe [Hkv, l, D], w1 [Hkv, D, l D], w2 [Hkv, D, D].
class NsaCompressor : public Module {
 public:
  NsaCompressor(ParameterFactory& factory, int64_t n_kv_heads, int64_t kernel_size,
                int64_t head_dim, double init_std);
  NsaCompression weights() const { return {pe, w1, w2}; }

  Tensor pe, w1, w2;
};

class NsaParameters : public Module {
 public:
  NsaParameters(ParameterFactory& factory, const ModelConfig& config);
  NsaWeights weights() const { return {compress_k_.weights(), compress_v_.weights()}; }
  // The gates' logits [B, T, Hq, 3] (compressed, selected, window) from the attention's input
  // x [B, T, d_model] (the block's normed input).
  Tensor gate_logits(const Tensor& x) const;

 private:
  int64_t n_heads_;
  NsaCompressor& compress_k_;
  NsaCompressor& compress_v_;
  Linear& gate_;  // [3 Hq, d_model], no bias
};

}  // namespace infllm
