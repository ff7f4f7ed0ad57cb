// The shape of a decoder-only transformer (Llama-style: pre-norm RMSNorm, RoPE, GQA, SwiGLU).
#pragma once

#include <cstdint>

#include "attention/attention.h"

namespace infllm {

struct ModelConfig {
  int64_t vocab_size = 258;
  int64_t d_model = 128;
  int64_t n_layers = 2;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 4;
  int64_t head_dim = 32;  // d_model / n_heads unless set
  int64_t ffn_hidden = 384;
  double rope_theta = 10000.0;
  bool tie_embeddings = false;
  double norm_eps = 1e-5;
  double init_std = 0.02;
  AttentionOptions attention;
  bool activation_checkpointing = false;
  bool recompute_attention = false;  // with checkpointing: recompute the attention core too
};

}  // namespace infllm
