// The attention core of one layer, timed alone (`infllm bench RECIPE --attention-only`): what
// SelfAttention::attend runs between the qkv projection and the output projection, on random
// inputs of the recipe's shape, forward and forward + backward. The path is the one the
// recipe's attention options take at its length:
//
//   dense      causal flash attention over every causal key;
//   infllm_v2  InfLLM-V2's block selection (stage 1) + block-sparse attention (one softmax);
//   nsa        the NSA variant: key and value compression, compressed branch, selection,
//              selected and window branches, sigmoid gates (attention/nsa.h).
//
// Inputs: packed qkv [B, T, Hq + 2 Hkv, D] ~ normal(0, 1) (as if rotated, as the layer emits
// it); for nsa also gate logits [B, T, Hq, 3] and the compression weights, normal(0,
// model.init_std) as the layer initializes them. Forward + backward seeds the output's gradient
// with normal(0, 1) and runs the backward into every input (qkv, and for nsa the gates and the
// compression weights), as a training step does. Each timing ends in a device synchronization.
#pragma once

#include <cstdint>
#include <string>

#include "core/device.h"
#include "core/dtype.h"
#include "layers/model_config.h"

namespace infllm::train {

struct AttentionBenchResult {
  std::string path;  // "dense", "infllm_v2" or "nsa"
  int64_t B = 0, T = 0, Hq = 0, Hkv = 0, D = 0;
  double forward_ms = 0, forward_backward_ms = 0;  // medians over the timed repetitions
};

// `steps` timed repetitions of each after `warmup` untimed ones.
AttentionBenchResult bench_attention_core(const ModelConfig& model, int64_t B, int64_t T,
                                          Device device, DType dtype, int64_t steps, int64_t warmup,
                                          uint64_t seed);

// The path `model`'s attention options take at length T (the names above).
std::string attention_path(const ModelConfig& model, int64_t T);

}  // namespace infllm::train
