// The shape of a decoder-only transformer (Llama-style: pre-norm RMSNorm, RoPE, GQA, SwiGLU).
// A recipe fills it directly: its `model:` keys, its `attention:` keys (into `attention`) and
// train.activation_checkpointing / train.recompute_attention.
#pragma once

#include <cstdint>

#include "attention/attention.h"

namespace infllm {

struct ModelConfig {
  int64_t vocab_size = 258;  // the byte tokenizer: 256 bytes + BOS + EOS
  int64_t d_model = 128;
  int64_t n_layers = 2;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 0;    // 0: n_heads (no grouping); see with_derived_sizes
  int64_t head_dim = 0;      // 0: d_model / n_heads; see with_derived_sizes
  int64_t ffn_hidden = 384;  // the SwiGLU hidden width
  double rope_theta = 10000.0;
  bool tie_embeddings = false;
  double norm_eps = 1e-5;
  double init_std = 0.02;
  AttentionOptions attention;
  bool activation_checkpointing = false;
  bool recompute_attention = false;  // with checkpointing: recompute the attention core too
  bool operator==(const ModelConfig&) const = default;
};

// `config` with n_kv_heads and head_dim resolved when they are 0.
inline ModelConfig with_derived_sizes(ModelConfig config) {
  if (config.n_kv_heads == 0) config.n_kv_heads = config.n_heads;
  if (config.head_dim == 0 && config.n_heads > 0) config.head_dim = config.d_model / config.n_heads;
  return config;
}

}  // namespace infllm
