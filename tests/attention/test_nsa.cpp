// The NSA variant (attention/nsa.h): each branch against a plain f64 restatement written out
// below (the compression MLP, the compressed branch as an explicit masked softmax, the selection
// as summed group probabilities max-pooled to blocks, the selected and window branches as
// explicit key masks), finite-difference gradients of the whole attention, the layer's
// parameters and checkpointed path, and the CUDA path against the CPU reference.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <set>
#include <vector>

#include "attention/attention.h"
#include "attention/block_list_attention.h"
#include "attention/nsa.h"
#include "autograd/engine.h"
#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "layers/transformer.h"
#include "tests/test_util.h"
#include "train/recipe.h"

namespace infllm {
namespace {

using attention::NsaConfig;
using attention::SparseConfig;
using V = std::vector<double>;

// Kernels of 8 tokens every 4, blocks of 16, 1 init block + 1 forced local block, top 3;
// the window branch sees 2 blocks. T = 64 has 4 blocks and 15 kernels.
SparseConfig tiny_config() {
  return {.kernel_size = 8,
          .kernel_stride = 4,
          .block_size = 16,
          .init_blocks = 1,
          .window_size = 16,
          .topk = 3,
          .dense_len = 0};
}
NsaConfig tiny_nsa() {
  return {.window_size = 32};
}

Tensor randn(const Shape& shape, double std = 1.0, bool grad = false) {
  Tensor t = testing::random_normal(shape, DType::f64, Device::cpu(), std);
  t.set_requires_grad(grad);
  return t;
}

NsaCompression random_compression(int64_t H, int64_t l, int64_t D, bool grad = false) {
  return {randn({H, l, D}, 0.5, grad), randn({H, D, l * D}, 0.3, grad),
          randn({H, D, D}, 0.5, grad)};
}

double gelu(double x) {
  return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

// kc[b, i, h] = w2[h] gelu(w1[h] flatten(x[b, i s + u, h, :] + pe[h, u, :] for u < l)).
V reference_compress(const Tensor& x, const NsaCompression& c, const SparseConfig& cfg) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  const int64_t l = cfg.kernel_size, s = cfg.kernel_stride, Dh = c.w1.size(1);
  const int64_t nk = attention::num_kernels(cfg, int(T));
  const V xv = testing::as_f64(x), pe = testing::as_f64(c.pe), w1 = testing::as_f64(c.w1),
          w2 = testing::as_f64(c.w2);
  V out(size_t(B * nk * H * D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < nk; ++i)
      for (int64_t h = 0; h < H; ++h) {
        V flat(static_cast<size_t>(l * D)), hidden(static_cast<size_t>(Dh));
        for (int64_t u = 0; u < l; ++u)
          for (int64_t d = 0; d < D; ++d)
            flat[u * D + d] = xv[((b * T + i * s + u) * H + h) * D + d] + pe[(h * l + u) * D + d];
        for (int64_t r = 0; r < Dh; ++r) {
          double acc = 0;
          for (int64_t e = 0; e < l * D; ++e) acc += w1[(h * Dh + r) * l * D + e] * flat[e];
          hidden[r] = gelu(acc);
        }
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (int64_t r = 0; r < Dh; ++r) acc += w2[(h * D + d) * Dh + r] * hidden[r];
          out[((b * nk + i) * H + h) * D + d] = acc;
        }
      }
  return out;
}

// Softmax attention of q [B, T, Hq, D] over rows of keys/values [B, N, Hkv, D] that
// visible(b, t, g, j) admits; a row with none is zero.
V masked_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                   const std::function<bool(int64_t, int64_t, int64_t, int64_t)>& visible) {
  const int64_t B = q.size(0), T = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t N = k.size(1), Hkv = k.size(2), G = Hq / Hkv;
  const V qv = testing::as_f64(q), kv = testing::as_f64(k), vv = testing::as_f64(v);
  V out(size_t(B * T * Hq * D), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t g = h / G;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j < N; ++j)
          if (visible(b, t, g, j)) keys.push_back(j);
        if (keys.empty()) continue;
        V score;
        for (int64_t j : keys) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += qv[((b * T + t) * Hq + h) * D + d] * kv[((b * N + j) * Hkv + g) * D + d];
          score.push_back(dot / std::sqrt(double(D)));
        }
        const double mx = *std::max_element(score.begin(), score.end());
        double z = 0;
        for (double& x : score) z += (x = std::exp(x - mx));
        for (size_t n = 0; n < keys.size(); ++n)
          for (int64_t d = 0; d < D; ++d)
            out[((b * T + t) * Hq + h) * D + d] +=
                score[n] / z * vv[((b * N + keys[n]) * Hkv + g) * D + d];
      }
  return out;
}

// The selection restated: p = softmax over the causal kernels of q.kc / sqrt(D) per head,
// summed over the group's heads, max-pooled over kernels [r j - 1, r j + r - 1], forced blocks
// first, the rest by score (ties: lower block), top-k, ascending.
std::vector<std::set<int>> reference_selection(const Tensor& q, const Tensor& kc,
                                               const SparseConfig& cfg) {
  const int64_t B = q.size(0), T = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t nk = kc.size(1), Hkv = kc.size(2), G = Hq / Hkv;
  const int r = cfg.kernels_per_block();
  const V qv = testing::as_f64(q), kv = testing::as_f64(kc);
  std::vector<std::set<int>> lists;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t g = 0; g < Hkv; ++g) {
        const int n = attention::num_kernels(cfg, int(t + 1)), own = int(t / cfg.block_size);
        V sum(size_t(n), 0.0);
        for (int64_t h = g * G; h < (g + 1) * G; ++h) {
          V x(static_cast<size_t>(n));
          for (int i = 0; i < n; ++i) {
            double dot = 0;
            for (int64_t d = 0; d < D; ++d)
              dot += qv[((b * T + t) * Hq + h) * D + d] * kv[((b * nk + i) * Hkv + g) * D + d];
            x[i] = dot / std::sqrt(double(D));
          }
          const double mx = n ? *std::max_element(x.begin(), x.end()) : 0;
          double z = 0;
          for (double e : x) z += std::exp(e - mx);
          for (int i = 0; i < n; ++i) sum[i] += std::exp(x[i] - mx) / z;
        }
        std::vector<std::pair<double, int>> ranked;  // (-score, block): ascending = best first
        for (int j = 0; j <= own; ++j) {
          double score = -INFINITY;
          if (attention::is_forced_block(cfg, int(t), j))
            score = INFINITY;
          else
            for (int i = std::max(r * j - 1, 0); i <= std::min(r * j + r - 1, n - 1); ++i)
              score = std::max(score, sum[i]);
          ranked.push_back({-score, j});
        }
        std::sort(ranked.begin(), ranked.end());
        std::set<int> chosen;
        for (size_t i = 0; i < ranked.size() && int(i) < cfg.topk; ++i)
          chosen.insert(ranked[i].second);
        lists.push_back(chosen);
      }
  return lists;
}

std::set<int> list_at(const Tensor& blocks, int64_t row) {
  const int32_t* p = blocks.data<int32_t>() + row * blocks.size(3);
  std::set<int> out;
  for (int64_t i = 0; i < blocks.size(3); ++i)
    if (p[i] >= 0) out.insert(p[i]);
  return out;
}

TEST(NsaCompress, MatchesPlainMlpOverEachKernel) {
  for (auto [l, s] : {std::pair{8, 4}, {6, 2}, {4, 4}}) {
    SparseConfig cfg = tiny_config();
    cfg.kernel_size = l;
    cfg.kernel_stride = s;
    SCOPED_TRACE(::testing::Message() << "kernel " << l << " stride " << s);
    Tensor x = randn({2, 37, 2, 4});
    NsaCompression c = random_compression(2, l, 4);
    Tensor kc = nsa_compress(x, c, cfg);
    ASSERT_EQ(kc.shape(), Shape({2, attention::num_kernels(cfg, 37), 2, 4}));
    EXPECT_LT(testing::rel_error(kc, reference_compress(x, c, cfg)), 1e-12);
  }
}

TEST(NsaCompressedBranch, MatchesExplicitMaskedSoftmax) {
  const SparseConfig cfg = tiny_config();  // kernel i is visible from token 4 i + 7 on
  for (int64_t T : {5, 8, 9, 11, 37, 64}) {
    SCOPED_TRACE(::testing::Message() << "T = " << T);
    const int64_t nk = attention::num_kernels(cfg, int(T));
    Tensor q = randn({2, T, 4, 4}), kc = randn({2, nk, 2, 4}), vc = randn({2, nk, 2, 4});
    const V ref = masked_attention(q, kc, vc, [&](int64_t, int64_t t, int64_t, int64_t i) {
      return i * cfg.kernel_stride + cfg.kernel_size - 1 <= t;
    });
    EXPECT_LT(testing::rel_error(nsa_compressed_attention(q, kc, vc, cfg), ref), 1e-12);
  }
  // Its gradient through the fold, padding and slices against finite differences.
  GradcheckResult r = gradcheck(
      [&](const std::vector<Tensor>& v) { return nsa_compressed_attention(v[0], v[1], v[2], cfg); },
      {randn({1, 30, 4, 4}, 1, true), randn({1, 6, 2, 4}, 1, true), randn({1, 6, 2, 4}, 1, true)});
  EXPECT_LT(r.max_error, 1e-7) << r.worst;
}

TEST(NsaSelection, RanksSummedGroupProbabilitiesOfTheCompressedKeys) {
  const SparseConfig cfg = tiny_config();
  Tensor q = randn({2, 64, 4, 4}, 2.0), kc = randn({2, 15, 2, 4}, 2.0);
  Tensor blocks = nsa_select_blocks(q, kc, cfg);
  ASSERT_EQ(blocks.shape(), Shape({2, 64, 2, 3}));
  const std::vector<std::set<int>> ref = reference_selection(q, kc, cfg);
  for (size_t row = 0; row < ref.size(); ++row)
    EXPECT_EQ(list_at(blocks, int64_t(row)), ref[row]) << "row " << row;
}

TEST(NsaSelection, OnMeanPooledKeysIsInfllmV2Selection) {
  SparseConfig cfg = tiny_config();
  Tensor q = randn({1, 80, 4, 4}), k = randn({1, 80, 2, 4});
  const int nk = attention::num_kernels(cfg, 80);
  Tensor kc = Tensor::empty({1, nk, 2, 4}, DType::f64);
  attention::AttentionShape shape{1, 80, 4, 2, 4, 0.5f};
  attention::cpu::compress_keys<double>(cfg, shape, k.data<double>(), kc.data<double>());
  EXPECT_EQ(nsa_select_blocks(q, kc, cfg).to_vector<int32_t>(),
            select_attention_blocks(q, k, cfg).to_vector<int32_t>());
}

TEST(NsaSelectedBranch, WithTopkCoveringEveryBlockIsDense) {
  SparseConfig cfg = tiny_config();
  cfg.topk = 5;  // 70 tokens: 5 blocks of 16
  Tensor q = randn({2, 70, 4, 4}), k = randn({2, 70, 2, 4}), v = randn({2, 70, 2, 4});
  NsaWeights w{random_compression(2, 8, 4), random_compression(2, 8, 4)};
  AttentionOptions dense;
  dense.mode = attention::AttentionMode::dense;
  const NsaBranches b = nsa_branches(q, k, v, w, cfg, tiny_nsa());
  EXPECT_LT(testing::rel_error(b.selected, testing::as_f64(causal_attention(q, k, v, dense))),
            1e-12);
}

TEST(NsaSelectedBranch, MatchesExplicitBlockMask) {
  const SparseConfig cfg = tiny_config();
  Tensor q = randn({2, 64, 4, 4}), k = randn({2, 64, 2, 4}), v = randn({2, 64, 2, 4});
  NsaWeights w{random_compression(2, 8, 4), random_compression(2, 8, 4)};
  const NsaBranches b = nsa_branches(q, k, v, w, cfg, tiny_nsa());
  const V ref = masked_attention(q, k, v, [&](int64_t bi, int64_t t, int64_t g, int64_t j) {
    return j <= t && list_at(b.blocks, (bi * 64 + t) * 2 + g).count(int(j / cfg.block_size));
  });
  EXPECT_LT(testing::rel_error(b.selected, ref), 1e-12);
  // Some token must have left a block out, or this test would not test selection.
  int dropped = 0;
  for (int64_t row = 0; row < 2 * 64 * 2; ++row)
    dropped += int(list_at(b.blocks, row).size()) < int(row / 2 % 64 / 16) + 1;
  EXPECT_GT(dropped, 0);
}

TEST(NsaWindowBranch, MatchesExplicitWindowMask) {
  const SparseConfig cfg = tiny_config();
  const NsaConfig nsa = tiny_nsa();  // 2 blocks of 16: the token's own and the one before
  Tensor lists = sliding_window_blocks(1, 50, 1, 16, 32, Device::cpu());
  EXPECT_EQ(list_at(lists, 0), (std::set<int>{0}));
  EXPECT_EQ(list_at(lists, 31), (std::set<int>{0, 1}));
  EXPECT_EQ(list_at(lists, 32), (std::set<int>{1, 2}));
  Tensor q = randn({2, 75, 4, 4}), k = randn({2, 75, 2, 4}), v = randn({2, 75, 2, 4});
  NsaWeights w{random_compression(2, 8, 4), random_compression(2, 8, 4)};
  const V ref = masked_attention(q, k, v, [&](int64_t, int64_t t, int64_t, int64_t j) {
    return j <= t && j / 16 > t / 16 - nsa.window_size / 16;
  });
  EXPECT_LT(testing::rel_error(nsa_branches(q, k, v, w, cfg, nsa).window, ref), 1e-12);
}

TEST(NsaAttention, GatesWeighTheThreeBranches) {
  const SparseConfig cfg = tiny_config();
  for (int64_t T : {5, 64}) {  // T = 5: no kernel has ended, the compressed branch is zero
    SCOPED_TRACE(::testing::Message() << "T = " << T);
    Tensor q = randn({1, T, 4, 4}), k = randn({1, T, 2, 4}), v = randn({1, T, 2, 4});
    Tensor gates = randn({1, T, 4, 3});
    NsaWeights w{random_compression(2, 8, 4), random_compression(2, 8, 4)};
    const NsaBranches b = nsa_branches(q, k, v, w, cfg, tiny_nsa());
    const V g = testing::as_f64(gates), c = testing::as_f64(b.compressed),
            s = testing::as_f64(b.selected), win = testing::as_f64(b.window);
    V ref(c.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      const double* row = &g[i / 4 * 3];  // D = 4: element i belongs to (token, head) i / 4
      auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
      ref[i] = sig(row[0]) * c[i] + sig(row[1]) * s[i] + sig(row[2]) * win[i];
    }
    EXPECT_LT(testing::rel_error(nsa_attention(q, k, v, gates, w, cfg, tiny_nsa()), ref), 1e-12);
  }
}

TEST(NsaAttention, GradientsMatchFiniteDifferences) {
  // Smaller than tiny_config (every element costs two forwards): kernels of 4 every 2, blocks
  // of 8, top 3 of 4 blocks with 1 init + 1 local forced, a window of 2 blocks; G = 2.
  const SparseConfig cfg{.kernel_size = 4,
                         .kernel_stride = 2,
                         .block_size = 8,
                         .init_blocks = 1,
                         .window_size = 8,
                         .topk = 3,
                         .dense_len = 0};
  const NsaConfig nsa{.window_size = 16};
  // q, k, v, gate logits, then pe, w1, w2 of the keys' and of the values' compression.
  std::vector<Tensor> inputs{randn({1, 32, 2, 4}, 1, true), randn({1, 32, 1, 4}, 1, true),
                             randn({1, 32, 1, 4}, 1, true), randn({1, 32, 2, 3}, 1, true)};
  for (int i = 0; i < 2; ++i) {
    NsaCompression c = random_compression(1, 4, 4, true);
    inputs.insert(inputs.end(), {c.pe, c.w1, c.w2});
  }
  GradcheckResult r = gradcheck(
      [&](const std::vector<Tensor>& x) {
        NsaWeights w{{x[4], x[5], x[6]}, {x[7], x[8], x[9]}};
        return nsa_attention(x[0], x[1], x[2], x[3], w, cfg, nsa);
      },
      inputs);
  EXPECT_LT(r.max_error, 1e-6) << r.worst;
}

TEST(NsaAttention, RejectsAWindowThatIsNotWholeBlocks) {
  Tensor q = randn({1, 64, 4, 4}), k = randn({1, 64, 2, 4});
  NsaWeights w{random_compression(2, 8, 4), random_compression(2, 8, 4)};
  EXPECT_THROW(nsa_branches(q, k, k, w, tiny_config(), {.window_size = 40}), Error);
}

ModelConfig nsa_model() {
  ModelConfig c;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.ffn_hidden = 32;
  c.attention.mode = attention::AttentionMode::sparse;
  c.attention.sparse = tiny_config();
  c.attention.variant = attention::AttentionVariant::nsa;
  c.attention.nsa = tiny_nsa();
  return c;
}

TEST(NsaLayer, ParametersAreNamedForCheckpointsAndTrainUnderCheckpointing) {
  TransformerLM model(nsa_model(), 11, Device::cpu(), DType::f32);
  std::set<std::string> names;
  for (auto& [name, tensor] : model.named_parameters()) names.insert(name);
  for (const char* name :
       {"blocks.1.attention.wqkv.weight", "blocks.1.attention.nsa.compress_k.pe",
        "blocks.1.attention.nsa.compress_k.w1", "blocks.1.attention.nsa.compress_k.w2",
        "blocks.1.attention.nsa.compress_v.w1", "blocks.1.attention.nsa.gate.weight"})
    EXPECT_TRUE(names.count(name)) << name;

  Tensor tokens = Tensor::from_vector(std::vector<int32_t>(2 * 48, 7), {2, 48});
  for (int64_t i = 0; i < tokens.numel(); ++i) tokens.data<int32_t>()[i] = int32_t(i * 37 % 250);
  Tensor targets = tokens.clone();
  auto grads = [&](bool checkpointed) {
    ModelConfig config = nsa_model();
    config.activation_checkpointing = checkpointed;
    TransformerLM m(config, 11, Device::cpu(), DType::f32);
    Tensor loss = m.loss(tokens, targets, targets.numel());
    backward(loss);
    std::vector<double> all{loss.item()};
    for (auto& [name, tensor] : m.named_parameters()) {
      EXPECT_TRUE(tensor->grad().defined()) << name << " got no gradient";
      if (!tensor->grad().defined()) continue;
      for (double g : testing::as_f64(tensor->grad())) all.push_back(g);
    }
    return all;
  };
  EXPECT_LT(testing::rel_error(grads(true), grads(false)), 1e-5);
}

// The experiment's recipe selects the variant; its resolved text (what a checkpoint stores, and
// eval rebuilds the model from) keeps it; a window that is not whole blocks is refused by key.
TEST(NsaRecipe, ExperimentRecipeSelectsNsaAndKeepsItInTheResolvedText) {
  const std::string path = "recipes/experiments/short_to_long/nsa.yaml";
  const train::Recipe r = train::load_recipe(path, {}, {.check_files = false});
  EXPECT_EQ(r.model.attention.variant, attention::AttentionVariant::nsa);
  EXPECT_EQ(r.model.attention.mode, attention::AttentionMode::sparse);
  EXPECT_EQ(r.model.attention.nsa.window_size, 512);
  EXPECT_TRUE(r.train.init_partial);
  EXPECT_EQ(train::recipe_from_yaml(train::recipe_to_yaml(r), "resolved", {.check_files = false}),
            r);
  const train::Recipe dense = train::load_recipe("recipes/experiments/short_to_long/dense.yaml", {},
                                                 {.check_files = false});
  EXPECT_EQ(dense.model.attention.variant, attention::AttentionVariant::infllm_v2);

  try {
    train::load_recipe(path, {"attention.nsa_window=100"}, {.check_files = false});
    ADD_FAILURE() << "nsa_window=100 with block_size 64 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention.nsa_window"), std::string::npos) << e.what();
  }
  EXPECT_THROW(train::load_recipe(path, {"attention.variant=nsb"}, {.check_files = false}), Error);
}

// The CUDA path (bf16 kernels) against the CPU reference on the same bf16-rounded inputs.
TEST(NsaCuda, BranchesAndGradientsMatchCpuReference) {
  INFLLM_REQUIRE_GPU();
  const int64_t B = 2, T = 700, Hq = 8, Hkv = 2, D = 64;
  SparseConfig cfg;  // kernels 32/16, blocks of 64
  cfg.init_blocks = 1;
  cfg.window_size = 64;
  cfg.topk = 4;
  const NsaConfig nsa{.window_size = 128};
  auto bf16_rounded = [](Tensor t) { return ops::cast(ops::cast(t, DType::bf16), DType::f64); };
  Tensor q = bf16_rounded(randn({B, T, Hq, D})), k = bf16_rounded(randn({B, T, Hkv, D}));
  Tensor v = bf16_rounded(randn({B, T, Hkv, D})), gates = bf16_rounded(randn({B, T, Hq, 3}));
  NsaCompression ck = random_compression(Hkv, 32, D), cv = random_compression(Hkv, 32, D);
  for (NsaCompression* c : {&ck, &cv})
    *c = {bf16_rounded(c->pe), bf16_rounded(ops::mul(c->w1, 0.1)),
          bf16_rounded(ops::mul(c->w2, 0.25))};
  auto gpu = [](const Tensor& t) {
    Tensor g = ops::cast(t, DType::bf16).to(Device::cuda());
    g.set_requires_grad(true);
    return g;
  };
  auto cpu = [](const Tensor& t) {
    Tensor c = t.clone();
    c.set_requires_grad(true);
    return c;
  };

  // Compression and the compressed branch.
  Tensor kc_cpu = nsa_compress(k, ck, cfg);
  Tensor kc_gpu = nsa_compress(gpu(k), {gpu(ck.pe), gpu(ck.w1), gpu(ck.w2)}, cfg);
  EXPECT_LT(testing::rel_error(kc_gpu, testing::as_f64(kc_cpu)), 2e-2);
  Tensor kc = bf16_rounded(kc_cpu), vc = bf16_rounded(nsa_compress(v, cv, cfg));
  EXPECT_LT(testing::rel_error(nsa_compressed_attention(gpu(q), gpu(kc), gpu(vc), cfg),
                               testing::as_f64(nsa_compressed_attention(q, kc, vc, cfg))),
            2e-2);

  // Selection on the same compressed keys: block choices agree (bf16 scores vs f64).
  Tensor blocks_cpu = nsa_select_blocks(q, kc, cfg);
  Tensor blocks_gpu = nsa_select_blocks(gpu(q), gpu(kc), cfg).to(Device::cpu());
  EXPECT_GE(attention::block_agreement(blocks_gpu.data<int32_t>(), blocks_cpu.data<int32_t>(),
                                       size_t(B * T * Hkv), cfg.topk),
            0.97);

  // Selected (on the CPU's lists) and window branches, forward and backward.
  Tensor probe = bf16_rounded(randn({B, T, Hq, D}));
  auto branch_grads = [&](const Tensor& lists, bool on_gpu) {
    Tensor qq = on_gpu ? gpu(q) : cpu(q), kk = on_gpu ? gpu(k) : cpu(k);
    Tensor vv = on_gpu ? gpu(v) : cpu(v);
    Tensor l = on_gpu ? lists.to(Device::cuda()) : lists;
    Tensor out = block_list_attention(qq, kk, vv, l, 64);
    backward({out}, {on_gpu ? ops::cast(probe, DType::bf16).to(Device::cuda()) : probe});
    V all = testing::as_f64(out);
    for (const Tensor& x : {qq, kk, vv})
      for (double g : testing::as_f64(x.grad())) all.push_back(g);
    return all;
  };
  for (const Tensor& lists :
       {blocks_cpu, sliding_window_blocks(B, T, Hkv, 64, nsa.window_size, Device::cpu())})
    EXPECT_LT(testing::rel_error(branch_grads(lists, true), branch_grads(lists, false)), 3e-2);

  // The whole attention with every block selected (no selection ambiguity): output and the
  // gradients of every input and parameter.
  cfg.topk = 11;  // 700 tokens: 11 blocks
  auto whole = [&](bool on_gpu) {
    auto in = [&](const Tensor& t) { return on_gpu ? gpu(t) : cpu(t); };
    std::vector<Tensor> x{in(q),     in(k),     in(v),     in(gates), in(ck.pe),
                          in(ck.w1), in(ck.w2), in(cv.pe), in(cv.w1), in(cv.w2)};
    NsaWeights w{{x[4], x[5], x[6]}, {x[7], x[8], x[9]}};
    Tensor out = nsa_attention(x[0], x[1], x[2], x[3], w, cfg, nsa);
    backward({out}, {on_gpu ? ops::cast(probe, DType::bf16).to(Device::cuda()) : probe});
    std::vector<V> all{testing::as_f64(out)};
    for (const Tensor& t : x) all.push_back(testing::as_f64(t.grad()));
    return all;
  };
  const std::vector<V> g = whole(true), c = whole(false);
  for (size_t i = 0; i < g.size(); ++i) EXPECT_LT(testing::rel_error(g[i], c[i]), 5e-2) << i;
}

}  // namespace
}  // namespace infllm
