#include "layers/block.h"

#include "autograd/functions.h"

namespace infllm {

Block::Block(ParameterFactory& factory, const ModelConfig& config)
    : attention_norm_(register_module(
          "attention_norm", std::make_unique<RMSNorm>(factory, config.d_model, config.norm_eps))),
      attention_(register_module("attention", std::make_unique<SelfAttention>(factory, config))),
      mlp_norm_(register_module(
          "mlp_norm", std::make_unique<RMSNorm>(factory, config.d_model, config.norm_eps))),
      mlp_(register_module("mlp", std::make_unique<MLP>(factory, config))) {}

Tensor Block::forward(const Tensor& x) const {
  Tensor h = add(x, attention_.forward(attention_norm_.forward(x)));
  return add(h, mlp_.forward(mlp_norm_.forward(h)));
}

}  // namespace infllm
