#include "layers/transformer.h"

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

double TransformerLM::flops_per_token(int64_t T) const {
  // 6 FLOPs per weight per token (forward 2, backward 4), embedding lookups excluded, plus
  // causal attention: 2 matmuls of T/2 keys on average, forward and backward (x3), 2 FLOPs each.
  double matmul_params = 0;
  for (auto& [name, tensor] : const_cast<TransformerLM*>(this)->named_parameters()) {
    if (tensor->dim() == 2 && name != "embedding.weight") matmul_params += double(tensor->numel());
  }
  if (config_.tie_embeddings) matmul_params += double(config_.vocab_size * config_.d_model);
  double attention =
      6.0 * double(config_.n_layers) * double(T) * double(config_.n_heads * config_.head_dim);
  return 6.0 * matmul_params + attention;
}

}  // namespace infllm
