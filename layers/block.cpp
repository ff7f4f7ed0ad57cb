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

namespace {

// The value of a residual stream as one tensor (for the checkpoints' boundaries).
Tensor sum_of(const Residual& r) {
  return r.branch.defined() ? add(r.x, r.branch) : r.x;
}

}  // namespace

std::vector<Tensor> Block::attention_inputs(const Tensor& normed) const {
  std::vector<Tensor> inputs{attention_.project_qkv(normed)};
  if (Tensor gates = attention_.project_gates(normed); gates.defined()) inputs.push_back(gates);
  return inputs;
}

Tensor Block::attend(const std::vector<Tensor>& inputs) const {
  return attention_.attend(inputs[0], inputs.size() > 1 ? inputs[1] : Tensor());
}

Residual Block::finish(const Tensor& x, const Tensor& attended) const {
  auto [h, normed] = mlp_norm_.forward_residual({x, attention_.project_out(attended)});
  return {h, mlp_.forward(normed)};
}

Residual Block::forward(const Residual& in) const {
  auto [x, normed] = attention_norm_.forward_residual(in);
  return finish(x, attend(attention_inputs(normed)));
}

Residual Block::forward_prefill(const Residual& in, KvCache& cache, int64_t index) const {
  INFLLM_CHECK(cache.length() == 0, "Block::forward_prefill: the cache already holds ",
               cache.length(), " positions (prefill fills an empty cache)");
  auto [x, normed] = attention_norm_.forward_residual(in);
  std::vector<Tensor> inputs = attention_inputs(normed);
  cache.store(index, inputs[0]);
  return finish(x, attend(inputs));
}

Residual Block::forward_decode(const Residual& in, KvCache& cache, int64_t index) const {
  const int64_t position = cache.length();
  auto [x, normed] = attention_norm_.forward_residual(in);
  Tensor qkv = attention_.project_qkv(normed, position);
  cache.store(index, qkv);
  KvCache::DecodeRecord record;
  Tensor attended = attention_.attend_cached(qkv, cache.layer(index), position, &record);
  cache.record_decode(index, std::move(record));
  return finish(x, attended);
}

Residual Block::forward_checkpointed(const Residual& in, bool recompute_attention) const {
  using Tensors = std::vector<Tensor>;
  const Tensor x = sum_of(in);
  if (recompute_attention) {
    return {checkpoint(
                [this](const Tensors& t) {
                  return Tensors{sum_of(forward({t[0], {}}))};
                },
                {x})[0],
            {}};
  }
  Tensors inputs = checkpoint(
      [this](const Tensors& t) { return attention_inputs(attention_norm_.forward(t[0])); }, {x});
  Tensor attended = attend(inputs);
  return {checkpoint([this](const Tensors& t) { return Tensors{sum_of(finish(t[0], t[1]))}; },
                     {x, attended})[0],
          {}};
}

}  // namespace infllm
