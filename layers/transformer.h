// The decoder-only language model: embedding, n pre-norm blocks, final norm, LM head
// (optionally tied to the embedding) fused with the cross-entropy loss.
#pragma once

#include <vector>

#include "layers/block.h"
#include "layers/embedding.h"
#include "layers/kv_cache.h"
#include "layers/model_config.h"
#include "layers/rms_norm.h"

namespace infllm {

class TransformerLM : public Module {
 public:
  // Parameters are drawn from Philox(seed) in f32 and cast to `dtype` on `device`.
  TransformerLM(const ModelConfig& config, uint64_t seed, Device device, DType dtype);

  // tokens i32 [B, T] -> final hidden states [B, T, d_model] (before the LM head).
  Tensor hidden_states(const Tensor& tokens) const;
  // Mean next-token cross-entropy of targets i32 [B, T] (-1 ignored; valid_count of them not).
  Tensor loss(const Tensor& tokens, const Tensor& targets, int64_t valid_count) const;
  // Logits [B, T, V] of the last position only, for generation: [B, V].
  Tensor last_logits(const Tensor& tokens) const;
  // Logits of every position in f32 (hidden states and head cast up, f32 matmul), for
  // evaluation: loss by position, greedy answers. [B, T] -> [B, T, V].
  Tensor logits(const Tensor& tokens) const;

  // Generation with a KV cache (layers/kv_cache.h), one sequence, under NoGradGuard. make_cache:
  // an empty cache for `capacity` positions on the model's device in its dtype. prefill: the
  // prompt i32 [1, T] through the full-sequence forward into the empty cache -> logits [V] of
  // its last position. decode_step: the token at position cache.length() -> logits [V] of the
  // next one, attending over the cache (dense, or InfLLM-V2 sparse by the same switch as a
  // full-sequence forward of that length). The NSA variant has no cached decode (an error).
  KvCache make_cache(int64_t capacity) const;
  Tensor prefill(const Tensor& tokens, KvCache& cache) const;
  Tensor decode_step(int32_t token, KvCache& cache) const;

  const ModelConfig& config() const { return config_; }
  // Switches every layer to another attention schedule (same weights): eval --attention.
  void set_attention(const AttentionOptions& options) { config_.attention = options; }
  // Matmul FLOPs per token for forward + backward at length T (6 N plus the attention core on
  // the path it takes at T: attention_flops_per_token), for MFU.
  double flops_per_token(int64_t T) const;

 private:
  const Tensor& head_weight() const;
  Tensor last_position_logits(const Tensor& x) const;

  ModelConfig config_;
  ParameterFactory factory_;  // declared before the modules it creates
  Embedding& embedding_;
  std::vector<Block*> blocks_;
  RMSNorm* final_norm_ = nullptr;
  Linear* head_ = nullptr;  // null when tied to the embedding
};

}  // namespace infllm
