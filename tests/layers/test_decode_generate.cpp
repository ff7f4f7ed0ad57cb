// Generation with a KV cache (TransformerLM::prefill / decode_step) against the no-cache
// recompute (last_logits of the whole context each step) on a small random-weight model: greedy
// tokens equal and logits close, dense and InfLLM-V2 sparse (a SparseConfig small enough that
// the sparse path leaves blocks out). On the CPU in f32; on the GPU in bf16 (skipped without
// one), where the two paths round differently, so a step may pick another token only where the
// recompute's top two logits are a rounding apart.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "attention/cached_attention.h"
#include "autograd/node.h"
#include "core/ops.h"
#include "layers/transformer.h"
#include "tests/test_util.h"

namespace infllm {
namespace {

using testing::as_f64;
using testing::rel_error;

int32_t argmax(const std::vector<double>& x) {
  return int32_t(std::max_element(x.begin(), x.end()) - x.begin());
}

std::vector<int32_t> random_prompt(int n, int vocab) {
  const std::vector<double> u = as_f64(testing::random_uniform({n}, 0.0, double(vocab)));
  std::vector<int32_t> tokens;
  for (double x : u) tokens.push_back(std::min(int32_t(x), int32_t(vocab - 1)));
  return tokens;
}

std::vector<double> recompute_logits(const TransformerLM& model, const std::vector<int32_t>& ctx,
                                     Device device) {
  Tensor input = Tensor::from_vector(ctx, {1, int64_t(ctx.size())}, device);
  return as_f64(model.last_logits(input));
}

struct Greedy {
  std::vector<int32_t> tokens;
  std::vector<std::vector<double>> logits;  // per step
};

// Greedy decoding without a cache: the whole context every step.
Greedy greedy_recompute(const TransformerLM& model, std::vector<int32_t> ctx, int steps,
                        Device device) {
  Greedy out;
  for (int i = 0; i < steps; ++i) {
    out.logits.push_back(recompute_logits(model, ctx, device));
    ctx.push_back(argmax(out.logits.back()));
    out.tokens.push_back(ctx.back());
  }
  return out;
}

// With the cache; `forced` (when given) feeds those tokens instead of the cache's own choices
// (teacher forcing: the logits of each step then see the recompute's context).
Greedy greedy_cached(const TransformerLM& model, const std::vector<int32_t>& prompt, int steps,
                     Device device, const std::vector<int32_t>& forced = {}) {
  KvCache cache = model.make_cache(int64_t(prompt.size()) + steps);
  Greedy out;
  Tensor input = Tensor::from_vector(prompt, {1, int64_t(prompt.size())}, device);
  std::vector<double> logits = as_f64(model.prefill(input, cache));
  for (int i = 0; i < steps; ++i) {
    out.logits.push_back(logits);
    out.tokens.push_back(forced.empty() ? argmax(logits) : forced[size_t(i)]);
    if (i + 1 < steps) logits = as_f64(model.decode_step(out.tokens.back(), cache));
  }
  return out;
}

ModelConfig small_model(attention::AttentionMode mode) {
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

void expect_cpu_greedy_equal(attention::AttentionMode mode) {
  autograd::NoGradGuard no_grad;
  const ModelConfig config = small_model(mode);
  const TransformerLM model(config, testing::fresh_seed(), Device::cpu(), DType::f32);
  const std::vector<int32_t> prompt = random_prompt(150, int(config.vocab_size));
  const int steps = 50;
  const Greedy ref = greedy_recompute(model, prompt, steps, Device::cpu());
  const Greedy got = greedy_cached(model, prompt, steps, Device::cpu());
  EXPECT_EQ(got.tokens, ref.tokens);
  for (int i = 0; i < steps; ++i)
    EXPECT_LT(rel_error(got.logits[size_t(i)], ref.logits[size_t(i)]), 1e-4) << "step " << i;
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
  const std::vector<int32_t> prompt = random_prompt(199, 64);
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

// ---- CUDA ----------------------------------------------------------------------------------

// D = 64 and blocks of 64 (the CUDA sparse kernels' shape); 700 positions hold 11 blocks, topk 4.
ModelConfig gpu_model(attention::AttentionMode mode) {
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

void expect_gpu_greedy_equal(attention::AttentionMode mode) {
  INFLLM_REQUIRE_GPU();
  autograd::NoGradGuard no_grad;
  const ModelConfig config = gpu_model(mode);
  const TransformerLM model(config, testing::fresh_seed(), Device::cuda(), DType::bf16);
  const std::vector<int32_t> prompt = random_prompt(600, int(config.vocab_size));
  const int steps = 100;
  const Greedy ref = greedy_recompute(model, prompt, steps, Device::cuda());
  // Teacher-forced on the recompute's tokens: every step's choice must agree unless the
  // recompute's own top two logits are within bf16 rounding of each other.
  const Greedy forced = greedy_cached(model, prompt, steps, Device::cuda(), ref.tokens);
  int near_ties = 0;
  for (int i = 0; i < steps; ++i) {
    const std::vector<double>& r = ref.logits[size_t(i)];
    const int32_t mine = argmax(forced.logits[size_t(i)]);
    EXPECT_LT(rel_error(forced.logits[size_t(i)], r), 3e-2) << "step " << i;
    if (mine == ref.tokens[size_t(i)]) continue;
    const double margin = r[size_t(ref.tokens[size_t(i)])] - r[size_t(mine)];
    EXPECT_LT(margin, 2e-2 * std::max(1.0, std::abs(r[size_t(mine)]))) << "step " << i;
    ++near_ties;
  }
  EXPECT_LE(near_ties, steps / 10);
  // Free running: identical up to the first near tie (usually all the way).
  const Greedy free = greedy_cached(model, prompt, steps, Device::cuda());
  const int same =
      int(std::mismatch(free.tokens.begin(), free.tokens.end(), ref.tokens.begin()).first -
          free.tokens.begin());
  std::printf("gpu greedy %s: %d of %d tokens equal before the first difference, %d near ties\n",
              std::string(to_string(mode)).c_str(), same, steps, near_ties);
  if (near_ties == 0) {
    EXPECT_EQ(free.tokens, ref.tokens);
  }
}

TEST(DecodeGenerateCuda, DenseGreedyWithTheCacheEqualsTheRecompute) {
  expect_gpu_greedy_equal(attention::AttentionMode::dense);
}

TEST(DecodeGenerateCuda, SparseGreedyWithTheCacheEqualsTheRecompute) {
  expect_gpu_greedy_equal(attention::AttentionMode::sparse);
}

}  // namespace
}  // namespace infllm
