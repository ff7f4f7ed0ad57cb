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

std::vector<Tensor> Block::attention_inputs(const Tensor& x) const {
  Tensor normed = attention_norm_.forward(x);
  std::vector<Tensor> inputs{attention_.project_qkv(normed)};
  if (Tensor gates = attention_.project_gates(normed); gates.defined()) inputs.push_back(gates);
  return inputs;
}

Tensor Block::attend(const std::vector<Tensor>& inputs) const {
  return attention_.attend(inputs[0], inputs.size() > 1 ? inputs[1] : Tensor());
}

Tensor Block::finish(const Tensor& x, const Tensor& attended) const {
  auto [h, normed] = mlp_norm_.forward_residual(x, attention_.project_out(attended));
  return add(h, mlp_.forward(normed));
}

Tensor Block::forward(const Tensor& x) const {
  return finish(x, attend(attention_inputs(x)));
}

Tensor Block::forward_prefill(const Tensor& x, KvCache& cache, int64_t index) const {
  INFLLM_CHECK(cache.length() == 0, "Block::forward_prefill: the cache already holds ",
               cache.length(), " positions (prefill fills an empty cache)");
  std::vector<Tensor> inputs = attention_inputs(x);
  cache.store(index, inputs[0]);
  return finish(x, attend(inputs));
}

Tensor Block::forward_decode(const Tensor& x, KvCache& cache, int64_t index) const {
  const int64_t position = cache.length();
  Tensor qkv = attention_.project_qkv(attention_norm_.forward(x), position);
  cache.store(index, qkv);
  KvCache::DecodeRecord record;
  Tensor attended = attention_.attend_cached(qkv, cache.layer(index), position, &record);
  cache.record_decode(index, std::move(record));
  return finish(x, attended);
}

Tensor Block::forward_checkpointed(const Tensor& x, bool recompute_attention) const {
  using Tensors = std::vector<Tensor>;
  if (recompute_attention)
    return checkpoint([this](const Tensors& in) { return Tensors{forward(in[0])}; }, {x})[0];
  Tensors inputs = checkpoint([this](const Tensors& in) { return attention_inputs(in[0]); }, {x});
  Tensor attended = attend(inputs);
  return checkpoint([this](const Tensors& in) { return Tensors{finish(in[0], in[1])}; },
                    {x, attended})[0];
}

}  // namespace infllm
