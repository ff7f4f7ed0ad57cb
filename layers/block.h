// Pre-norm transformer block: h = x + attention(norm(x)); out = h + mlp(norm(h)).
#pragma once

#include <vector>

#include "layers/mlp.h"
#include "layers/rms_norm.h"
#include "layers/self_attention.h"

namespace infllm {

class Block : public Module {
 public:
  Block(ParameterFactory& factory, const ModelConfig& config);
  Tensor forward(const Tensor& x) const;
  // The same under activation checkpointing: backward recomputes the norms, projections and MLP
  // from the saved block input. The attention core (block selection, attention kernels) keeps
  // its inputs and outputs, so backward does not run it again, unless recompute_attention:
  // then the whole block is recomputed (least memory, one more attention forward per step).
  Tensor forward_checkpointed(const Tensor& x, bool recompute_attention) const;

  // Generation, one sequence (B = 1), this block being layer `index` of `cache`. forward_prefill:
  // x [1, T, d_model] at positions 0 .. T - 1 through the full-sequence attention, storing the
  // rotated k, v in the empty cache. forward_decode: x [1, 1, d_model] of the token at position
  // cache.length(), stored, then attended over the cache (its query and block lists recorded:
  // KvCache::last_decode). Neither advances the cache.
  Tensor forward_prefill(const Tensor& x, KvCache& cache, int64_t index) const;
  Tensor forward_decode(const Tensor& x, KvCache& cache, int64_t index) const;

 private:
  // The attention core's inputs from the block input: {rotated q, k and v} or, for the NSA
  // variant, {q k v, gate logits}; attend() takes them in that order.
  std::vector<Tensor> attention_inputs(const Tensor& x) const;
  Tensor attend(const std::vector<Tensor>& inputs) const;
  Tensor finish(const Tensor& x, const Tensor& attended) const;  // residuals, wo and the MLP

  RMSNorm& attention_norm_;
  SelfAttention& attention_;
  RMSNorm& mlp_norm_;
  MLP& mlp_;
};

}  // namespace infllm
