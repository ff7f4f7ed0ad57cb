#include "layers/block.h"

#include "autograd/checkpoint.h"
#include "autograd/functions.h"

namespace infllm {

Block::Block(ParameterFactory& factory, const ModelConfig& config)
    : attention_norm_(register_module(
          "attention_norm", std::make_unique<RMSNorm>(factory, config.d_model, config.norm_eps))),
      attention_(register_module("attention", std::make_unique<SelfAttention>(factory, config))),
      mlp_norm_(register_module(
          "mlp_norm", std::make_unique<RMSNorm>(factory, config.d_model, config.norm_eps))),
      mlp_(register_module("mlp", std::make_unique<MLP>(factory, config))) {}

Tensor Block::qkv(const Tensor& x) const {
  return attention_.project_qkv(attention_norm_.forward(x));
}

Tensor Block::finish(const Tensor& x, const Tensor& attended) const {
  auto [h, normed] = mlp_norm_.forward_residual(x, attention_.project_out(attended));
  return add(h, mlp_.forward(normed));
}

Tensor Block::forward(const Tensor& x) const {
  return finish(x, attention_.attend(qkv(x)));
}

Tensor Block::forward_checkpointed(const Tensor& x, bool recompute_attention) const {
  using Tensors = std::vector<Tensor>;
  if (recompute_attention)
    return checkpoint([this](const Tensors& in) { return Tensors{forward(in[0])}; }, {x})[0];
  Tensor qkv_rows = checkpoint([this](const Tensors& in) { return Tensors{qkv(in[0])}; }, {x})[0];
  Tensor attended = attention_.attend(qkv_rows);
  return checkpoint([this](const Tensors& in) { return Tensors{finish(in[0], in[1])}; },
                    {x, attended})[0];
}

}  // namespace infllm
