// What the generation tests share (test_decode_generate.cpp on the CPU,
// test_decode_generate_cuda.cpp on the GPU): the small random-weight models, prompts, and greedy
// decoding with the KV cache (TransformerLM::prefill / decode_step) and without it (last_logits of
// the whole context each step).
#pragma once

#include <algorithm>
#include <functional>
#include <vector>

#include "core/ops.h"
#include "layers/transformer.h"
#include "tests/test_util.h"

namespace infllm::testing {

inline int32_t argmax(const std::vector<double>& x) {
  return int32_t(std::max_element(x.begin(), x.end()) - x.begin());
}

// n tokens uniform in [0, vocab), drawn from Philox(seed).
inline std::vector<int32_t> random_prompt(int n, int vocab, uint64_t seed) {
  const std::vector<double> u = as_f64(ops::uniform({n}, seed, 0, 0.0, double(vocab)));
  std::vector<int32_t> tokens;
  for (double x : u) tokens.push_back(std::min(int32_t(x), int32_t(vocab - 1)));
  return tokens;
}

inline std::vector<double> recompute_logits(const TransformerLM& model,
                                            const std::vector<int32_t>& ctx, Device device) {
  Tensor input = Tensor::from_vector(ctx, {1, int64_t(ctx.size())}, device);
  return as_f64(model.last_logits(input));
}

struct Greedy {
  std::vector<int32_t> tokens;
  std::vector<std::vector<double>> logits;  // per step
};

// Greedy decoding without a cache: the whole context every step. Step i's logits are those of
// position prompt.size() - 1 + i.
inline Greedy greedy_recompute(const TransformerLM& model, std::vector<int32_t> ctx, int steps,
                               Device device) {
  Greedy out;
  for (int i = 0; i < steps; ++i) {
    out.logits.push_back(recompute_logits(model, ctx, device));
    ctx.push_back(argmax(out.logits.back()));
    out.tokens.push_back(ctx.back());
  }
  return out;
}

// Called after the decode step that made step `step`'s logits (step >= 1; step 0 is the
// prefill's), with the cache that step left.
using DecodeStepHook = std::function<void(int step, const KvCache& cache)>;

// With the cache; `forced` (when given) feeds those tokens instead of the cache's own choices
// (teacher forcing: the logits of each step then see the recompute's context).
inline Greedy greedy_cached(const TransformerLM& model, const std::vector<int32_t>& prompt,
                            int steps, Device device, const std::vector<int32_t>& forced = {},
                            const DecodeStepHook& after_step = {}) {
  KvCache cache = model.make_cache(int64_t(prompt.size()) + steps);
  Greedy out;
  Tensor input = Tensor::from_vector(prompt, {1, int64_t(prompt.size())}, device);
  std::vector<double> logits = as_f64(model.prefill(input, cache));
  for (int i = 0; i < steps; ++i) {
    out.logits.push_back(logits);
    out.tokens.push_back(forced.empty() ? argmax(logits) : forced[size_t(i)]);
    if (i + 1 < steps) {
      logits = as_f64(model.decode_step(out.tokens.back(), cache));
      if (after_step) after_step(i + 1, cache);
    }
  }
  return out;
}

inline ModelConfig small_model(attention::AttentionMode mode) {
  ModelConfig config;
  config.vocab_size = 64;
  config.d_model = 64;
  config.n_layers = 2;
  config.n_heads = 4;
  config.n_kv_heads = 2;
  config.ffn_hidden = 128;
  config.init_std = 0.2;  // spread logits: distinct greedy choices, not one repeated token
  config.attention.mode = mode;
  attention::SparseConfig& cfg = config.attention.sparse;
  cfg.kernel_size = 8;
  cfg.kernel_stride = 4;
  cfg.block_size = 16;
  cfg.init_blocks = 1;
  cfg.window_size = 32;
  cfg.topk = 4;  // 64 visible tokens of the 150 .. 200 in the cache
  cfg.dense_len = 0;
  return config;
}

// D = 64 and blocks of 64 (the CUDA sparse kernels' shape), G = 2; 700 positions hold 11 blocks,
// topk 4 of which 3 are forced (block 0 and the 2-block window): one block is chosen per row.
inline ModelConfig gpu_model(attention::AttentionMode mode) {
  ModelConfig config = small_model(mode);
  config.vocab_size = 128;
  config.d_model = 256;
  config.head_dim = 64;
  config.ffn_hidden = 256;
  config.init_std = 0.05;
  attention::SparseConfig& cfg = config.attention.sparse;
  cfg = attention::SparseConfig{};
  cfg.window_size = 128;
  cfg.topk = 4;
  cfg.dense_len = 0;
  return config;
}

}  // namespace infllm::testing
