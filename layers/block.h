// Pre-norm transformer block: h = x + attention(norm(x)); out = h + mlp(norm(h)).
#pragma once

#include "layers/mlp.h"
#include "layers/rms_norm.h"
#include "layers/self_attention.h"

namespace infllm {

class Block : public Module {
 public:
  Block(ParameterFactory& factory, const ModelConfig& config);
  Tensor forward(const Tensor& x) const;

 private:
  RMSNorm& attention_norm_;
  SelfAttention& attention_;
  RMSNorm& mlp_norm_;
  MLP& mlp_;
};

}  // namespace infllm
