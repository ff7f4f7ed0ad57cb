// Generation with a KV cache (TransformerLM::prefill / decode_step) against the no-cache
// recompute (last_logits of the whole context each step) on a small random-weight model, on the
// CPU in f32: greedy tokens equal and logits close, dense and InfLLM-V2 sparse (a SparseConfig
// small enough that the sparse path leaves blocks out). The GPU cases, in bf16, are
// test_decode_generate_cuda.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "autograd/node.h"
#include "tests/layers/block_choice_check.h"
#include "tests/layers/decode_generate_support.h"
#include "tests/test_util.h"

namespace infllm {
namespace {

using testing::Greedy;
using testing::greedy_cached;
using testing::greedy_recompute;
using testing::random_prompt;
using testing::rel_error;
using testing::small_model;

void expect_cpu_greedy_equal(attention::AttentionMode mode) {
  autograd::NoGradGuard no_grad;
  const ModelConfig config = small_model(mode);
  TransformerLM model(config, testing::fresh_seed(), Device::cpu(), DType::f32);
  const std::vector<int32_t> prompt =
      random_prompt(150, int(config.vocab_size), testing::fresh_seed());
  const int steps = 50, layers = int(config.n_layers);
  const bool sparse = mode == attention::AttentionMode::sparse;
  // The recompute's block choice of its last row per layer (probe->rows[step * layers + layer]).
  const AttentionOptions plain = model.config().attention;
  auto probe = std::make_shared<testing::LastRowProbe>(plain.sparse);
  if (sparse) {
    AttentionOptions observed = plain;
    observed.observer = probe;
    model.set_attention(observed);
  }
  const Greedy ref = greedy_recompute(model, prompt, steps, Device::cpu());
  model.set_attention(plain);
  // The cache's run records each decode step's lists (KvCache::last_decode): in f32 on the CPU
  // they are the recompute's, layer by layer.
  std::vector<std::vector<testing::TokenSelection>> decoded(steps);
  const Greedy got =
      greedy_cached(model, prompt, steps, Device::cpu(), {}, [&](int step, const KvCache& cache) {
        if (sparse)
          for (int l = 0; l < layers; ++l)
            decoded[size_t(step)].push_back(testing::decoded_selection(cache, l));
      });
  EXPECT_EQ(got.tokens, ref.tokens);
  for (int i = 0; i < steps; ++i)
    EXPECT_LT(rel_error(got.logits[size_t(i)], ref.logits[size_t(i)]), 1e-4) << "step " << i;
  if (sparse) {
    ASSERT_EQ(probe->rows.size(), size_t(steps) * layers);
    for (int i = 1; i < steps; ++i)
      for (int l = 0; l < layers; ++l) {
        const testing::TokenSelection& mine = decoded[size_t(i)][size_t(l)];
        const testing::TokenSelection& theirs = probe->rows[size_t(i) * layers + l];
        ASSERT_EQ(mine.position, theirs.position) << "step " << i;
        EXPECT_EQ(mine.blocks, theirs.blocks) << "step " << i << " layer " << l;
        const ModelConfig& m = model.config();
        const attention::AttentionShape shape =
            testing::token_shape(int(m.n_heads), int(m.n_kv_heads), int(m.head_dim), mine.position);
        EXPECT_EQ(mine.blocks, testing::f64_blocks(m.attention.sparse, shape, mine))
            << "step " << i << " layer " << l;
      }
  }
  // Not one token repeated: the test would not see positions mixed up.
  std::vector<int32_t> distinct = ref.tokens;
  std::sort(distinct.begin(), distinct.end());
  EXPECT_GT(std::unique(distinct.begin(), distinct.end()) - distinct.begin(), 5);
}

TEST(DecodeGenerateCpu, DenseGreedyWithTheCacheEqualsTheRecompute) {
  expect_cpu_greedy_equal(attention::AttentionMode::dense);
}

TEST(DecodeGenerateCpu, SparseGreedyWithTheCacheEqualsTheRecompute) {
  expect_cpu_greedy_equal(attention::AttentionMode::sparse);
}

// The sparse runs above really are sparse: on the same weights and context the sparse logits
// differ from the dense ones (topk blocks of the causal ones are attended).
TEST(DecodeGenerateCpu, SparseDecodeLeavesBlocksOut) {
  autograd::NoGradGuard no_grad;
  const uint64_t seed = testing::fresh_seed();
  const TransformerLM sparse(small_model(attention::AttentionMode::sparse), seed, Device::cpu(),
                             DType::f32);
  const TransformerLM dense(small_model(attention::AttentionMode::dense), seed, Device::cpu(),
                            DType::f32);
  const std::vector<int32_t> prompt = random_prompt(199, 64, testing::fresh_seed());
  const Greedy a = greedy_cached(sparse, prompt, 2, Device::cpu());
  const Greedy b = greedy_cached(dense, prompt, 2, Device::cpu(), a.tokens);
  EXPECT_GT(rel_error(a.logits[1], b.logits[1]), 1e-3);
  const attention::SparseConfig& cfg = sparse.config().attention.sparse;
  EXPECT_LT(cfg.topk, 200 / cfg.block_size + 1);  // 4 of the 13 causal blocks
}

TEST(DecodeGenerateCpu, CacheLimitsAndNsaAreErrors) {
  autograd::NoGradGuard no_grad;
  const TransformerLM model(small_model(attention::AttentionMode::dense), testing::fresh_seed(),
                            Device::cpu(), DType::f32);
  KvCache cache = model.make_cache(4);
  model.prefill(Tensor::from_vector(std::vector<int32_t>{1, 2, 3, 4}, {1, 4}), cache);
  testing::expect_error([&] { model.decode_step(5, cache); }, {"capacity of 4"});
  testing::expect_error(
      [&] {
        model.prefill(Tensor::from_vector(std::vector<int32_t>{1}, {1, 1}), cache);
      },
      {"already holds 4"});
  ModelConfig nsa = small_model(attention::AttentionMode::sparse);
  nsa.attention.variant = attention::AttentionVariant::nsa;
  const TransformerLM nsa_model(nsa, testing::fresh_seed(), Device::cpu(), DType::f32);
  testing::expect_error([&] { nsa_model.make_cache(10); }, {"NSA", "--no-cache"});
}

}  // namespace
}  // namespace infllm
