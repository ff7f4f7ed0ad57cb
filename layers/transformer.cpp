#include "layers/transformer.h"

#include "attention/cached_attention.h"
#include "autograd/functions.h"
#include "layers/cross_entropy.h"

namespace infllm {

TransformerLM::TransformerLM(const ModelConfig& config, uint64_t seed, Device device, DType dtype)
    : config_(with_derived_sizes(config)),
      factory_(seed, device, dtype),
      embedding_(register_module(
          "embedding", std::make_unique<Embedding>(factory_, config.vocab_size, config.d_model,
                                                   config.init_std))) {
  for (int64_t i = 0; i < config.n_layers; ++i) {
    blocks_.push_back(&register_module("blocks." + std::to_string(i),
                                       std::make_unique<Block>(factory_, config_)));
  }
  final_norm_ = &register_module(
      "final_norm", std::make_unique<RMSNorm>(factory_, config.d_model, config.norm_eps));
  if (!config.tie_embeddings) {
    head_ = &register_module("head", std::make_unique<Linear>(factory_, config.d_model,
                                                              config.vocab_size, config.init_std));
  }
}

const Tensor& TransformerLM::head_weight() const {
  return head_ ? head_->weight : embedding_.weight;
}

Tensor TransformerLM::hidden_states(const Tensor& tokens) const {
  INFLLM_CHECK(tokens.dim() == 2 && tokens.dtype() == DType::i32,
               "TransformerLM: tokens must be i32 [B, T], got ", tokens.str());
  Tensor x = embedding_.forward(tokens);
  for (const Block* block : blocks_) {
    x = config_.activation_checkpointing
            ? block->forward_checkpointed(x, config_.recompute_attention)
            : block->forward(x);
  }
  return final_norm_->forward(x);
}

Tensor TransformerLM::loss(const Tensor& tokens, const Tensor& targets, int64_t valid_count) const {
  Tensor h = hidden_states(tokens);
  return lm_head_cross_entropy(reshape(h, {-1, config_.d_model}), head_weight(),
                               targets.reshape({-1}), valid_count);
}

Tensor TransformerLM::last_logits(const Tensor& tokens) const {
  Tensor h = hidden_states(tokens);
  int64_t T = h.size(1);
  Tensor last = slice(h, 1, T - 1, T).reshape({h.size(0), config_.d_model});
  return matmul(last, head_weight(), false, true);
}

Tensor TransformerLM::logits(const Tensor& tokens) const {
  Tensor h = hidden_states(tokens);
  Tensor flat = cast(h.reshape({-1, config_.d_model}), DType::f32);
  Tensor logits = matmul(flat, cast(head_weight(), DType::f32), false, true);
  return logits.reshape({h.size(0), h.size(1), config_.vocab_size});
}

KvCache TransformerLM::make_cache(int64_t capacity) const {
  INFLLM_CHECK(config_.attention.variant != attention::AttentionVariant::nsa,
               "TransformerLM: the NSA variant (attention.variant nsa) has no KV-cache decode; "
               "generate with the recompute path (infllm generate --no-cache)");
  return KvCache(config_, capacity, embedding_.weight.device(), embedding_.weight.dtype());
}

// The last position's logits [V] of hidden states [1, T, d_model].
Tensor TransformerLM::last_position_logits(const Tensor& x) const {
  const int64_t T = x.size(1);
  Tensor last = final_norm_->forward(slice(x, 1, T - 1, T)).reshape({1, config_.d_model});
  return matmul(last, head_weight(), false, true).reshape({config_.vocab_size});
}

Tensor TransformerLM::prefill(const Tensor& tokens, KvCache& cache) const {
  INFLLM_CHECK(tokens.dim() == 2 && tokens.size(0) == 1 && tokens.size(1) > 0 &&
                   tokens.dtype() == DType::i32,
               "TransformerLM::prefill: tokens must be i32 [1, T] with T > 0, got ", tokens.str());
  INFLLM_CHECK(cache.n_layers() == config_.n_layers, "TransformerLM::prefill: the cache has ",
               cache.n_layers(), " layers, the model ", config_.n_layers);
  Tensor x = embedding_.forward(tokens);
  for (size_t i = 0; i < blocks_.size(); ++i) x = blocks_[i]->forward_prefill(x, cache, int64_t(i));
  cache.advance(tokens.size(1));
  return last_position_logits(x);
}

Tensor TransformerLM::decode_step(int32_t token, KvCache& cache) const {
  INFLLM_CHECK(cache.n_layers() == config_.n_layers, "TransformerLM::decode_step: the cache has ",
               cache.n_layers(), " layers, the model ", config_.n_layers);
  INFLLM_CHECK(
      !decode_uses_sparse(config_.attention, cache.length()) ||
          (cache.has_compressed_keys() && cache.sparse_config() == config_.attention.sparse),
      "TransformerLM::decode_step: the sparse path needs the cache's compressed keys for "
      "the model's attention settings; make the cache after set_attention");
  Tensor input =
      Tensor::from_vector(std::vector<int32_t>{token}, {1, 1}, embedding_.weight.device());
  Tensor x = embedding_.forward(input);
  for (size_t i = 0; i < blocks_.size(); ++i) x = blocks_[i]->forward_decode(x, cache, int64_t(i));
  cache.advance(1);
  return last_position_logits(x);
}

double TransformerLM::flops_per_token(int64_t T) const {
  // 6 FLOPs per weight per token (forward 2, backward 4), embedding lookups excluded, plus the
  // attention core on the path it takes at length T (dense causal, or the sparse path's keys).
  double matmul_params = 0;
  for (auto& [name, tensor] : const_cast<TransformerLM*>(this)->named_parameters()) {
    if (tensor->dim() == 2 && name != "embedding.weight") matmul_params += double(tensor->numel());
  }
  if (config_.tie_embeddings) matmul_params += double(config_.vocab_size * config_.d_model);
  const double attention =
      double(config_.n_layers) *
      attention_flops_per_token(config_.attention, T, config_.n_heads, config_.head_dim);
  return 6.0 * matmul_params + attention;
}

}  // namespace infllm
