// Attention recall of the NSA variant (train/attention_recall.h) on a tiny NSA model with fresh
// random weights: the measured recall by layer equals a direct f64 computation from the layer's
// q and k and the compressed keys restated from its compression parameters (the MLP, the
// selection, the window, the dense softmax, all written out below), and it follows the
// compression weights, which InfLLM-V2's selection on the same q and k does not see.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "core/ops.h"
#include "layers/transformer.h"
#include "tests/test_util.h"
#include "train/attention_recall.h"

namespace infllm::train {
namespace {

using V = std::vector<double>;

constexpr int T = 256, kRows = 24;

// 16 blocks of 16 tokens, kernels of 8 every 4, top 3 (1 init + 1 forced local + 1 ranked),
// a window branch of 2 blocks; weights drawn wide enough that attention is far from uniform.
ModelConfig nsa_model() {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.ffn_hidden = 64;
  c.init_std = 0.3;
  c.attention.mode = attention::AttentionMode::sparse;
  c.attention.variant = attention::AttentionVariant::nsa;
  c.attention.sparse = {.kernel_size = 8,
                        .kernel_stride = 4,
                        .block_size = 16,
                        .init_blocks = 1,
                        .window_size = 16,
                        .topk = 3,
                        .dense_len = 0};
  c.attention.nsa.window_size = 32;
  return c;
}

Tensor random_tokens() {
  std::vector<int32_t> tokens(T);
  for (int t = 0; t < T; ++t) tokens[size_t(t)] = int32_t((t * 97 + 13) % 251);
  return Tensor::from_vector(tokens, {1, T});
}

// Each NSA call's q [T, Hq, D] and k [T, Hkv, D] in f64.
struct Capture : attention::NsaObserver {
  void observe(const Tensor& q, const Tensor& k, const Tensor&) override {
    qs.push_back(testing::as_f64(q.contiguous()));
    ks.push_back(testing::as_f64(k.contiguous()));
  }
  std::vector<V> qs, ks;
};

Capture capture(TransformerLM& model) {
  auto probe = std::make_shared<Capture>();
  const AttentionOptions plain = model.config().attention;
  AttentionOptions with = plain;
  with.nsa.observer = probe;
  model.set_attention(with);
  model.hidden_states(random_tokens());
  model.set_attention(plain);
  return *probe;
}

Tensor& parameter(TransformerLM& model, const std::string& name) {
  for (auto& [n, tensor] : model.named_parameters())
    if (n == name) return *tensor;
  throw std::runtime_error("no parameter " + name);
}

double gelu(double x) {
  return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

struct Direct {
  double selected = 0, branch_union = 0;
};

// The recall of one layer restated: kc = w2 gelu(w1 (k + pe)) per kernel and KV head; per row t
// and group g the block scores (softmax over the causal kernels per head, summed over the
// group, max-pooled over kernels [r j - 1, r j + r - 1]; init and local blocks forced), the
// top-k (ties: lower block); the dense softmax over keys 0..t; the mass in the selected blocks
// and in those plus the window branch's blocks.
Direct direct_recall(TransformerLM& model, int layer, const V& q, const V& k) {
  const ModelConfig c = model.config();
  const attention::SparseConfig& cfg = c.attention.sparse;
  const int Hq = int(c.n_heads), Hkv = int(c.n_kv_heads), D = int(c.head_dim), G = Hq / Hkv;
  const int l = cfg.kernel_size, s = cfg.kernel_stride, bs = cfg.block_size;
  const int nk = attention::num_kernels(cfg, T), r = cfg.kernels_per_block();
  const std::string prefix = "blocks." + std::to_string(layer) + ".attention.nsa.compress_k.";
  const V pe = testing::as_f64(parameter(model, prefix + "pe")),
          w1 = testing::as_f64(parameter(model, prefix + "w1")),
          w2 = testing::as_f64(parameter(model, prefix + "w2"));
  V kc(size_t(nk) * Hkv * D);
  for (int i = 0; i < nk; ++i)
    for (int h = 0; h < Hkv; ++h) {
      V hidden(static_cast<size_t>(D));
      for (int o = 0; o < D; ++o) {
        double acc = 0;
        for (int u = 0; u < l; ++u)
          for (int d = 0; d < D; ++d)
            acc += w1[(size_t(h) * D + o) * l * D + u * D + d] *
                   (k[(size_t(i * s + u) * Hkv + h) * D + d] + pe[(size_t(h) * l + u) * D + d]);
        hidden[size_t(o)] = gelu(acc);
      }
      for (int d = 0; d < D; ++d) {
        double acc = 0;
        for (int o = 0; o < D; ++o) acc += w2[(size_t(h) * D + d) * D + o] * hidden[size_t(o)];
        kc[(size_t(i) * Hkv + h) * D + d] = acc;
      }
    }
  const double scale = 1 / std::sqrt(double(D));
  auto dot = [&](const V& a, size_t ai, const V& b, size_t bi) {
    double x = 0;
    for (int d = 0; d < D; ++d) x += a[ai + d] * b[bi + d];
    return x * scale;
  };
  Direct out;
  const std::vector<int> rows = recall_rows(cfg, T, kRows);
  for (int t : rows)
    for (int g = 0; g < Hkv; ++g) {
      const int n = attention::num_kernels(cfg, t + 1), own = t / bs;
      V sum(size_t(n), 0.0);
      for (int h = g * G; h < (g + 1) * G; ++h) {
        V x(static_cast<size_t>(n));
        for (int i = 0; i < n; ++i)
          x[size_t(i)] = dot(q, (size_t(t) * Hq + h) * D, kc, (size_t(i) * Hkv + g) * D);
        const double mx = *std::max_element(x.begin(), x.end());
        double z = 0;
        for (double v : x) z += std::exp(v - mx);
        for (int i = 0; i < n; ++i) sum[size_t(i)] += std::exp(x[size_t(i)] - mx) / z;
      }
      std::vector<std::pair<double, int>> ranked;  // (-score, block): ascending = best first
      for (int j = 0; j <= own; ++j) {
        double score = -INFINITY;
        if (j < cfg.init_blocks || j > own - cfg.local_blocks())
          score = INFINITY;
        else
          for (int i = std::max(r * j - 1, 0); i <= std::min(r * j + r - 1, n - 1); ++i)
            score = std::max(score, sum[size_t(i)]);
        ranked.push_back({-score, j});
      }
      std::sort(ranked.begin(), ranked.end());
      std::vector<bool> selected(size_t(own) + 1, false), either(size_t(own) + 1, false);
      for (int i = 0; i < std::min<int>(cfg.topk, int(ranked.size())); ++i)
        selected[size_t(ranked[size_t(i)].second)] = either[size_t(ranked[size_t(i)].second)] =
            true;
      for (int j = std::max(0, own - c.attention.nsa.window_size / bs + 1); j <= own; ++j)
        either[size_t(j)] = true;
      for (int h = g * G; h < (g + 1) * G; ++h) {
        V p(size_t(t) + 1);
        for (int j = 0; j <= t; ++j)
          p[size_t(j)] = dot(q, (size_t(t) * Hq + h) * D, k, (size_t(j) * Hkv + g) * D);
        const double mx = *std::max_element(p.begin(), p.end());
        double z = 0, in_selected = 0, in_either = 0;
        for (int j = 0; j <= t; ++j) {
          const double e = std::exp(p[size_t(j)] - mx);
          z += e;
          in_selected += selected[size_t(j / bs)] ? e : 0;
          in_either += either[size_t(j / bs)] ? e : 0;
        }
        out.selected += in_selected / z;
        out.branch_union += in_either / z;
      }
    }
  out.selected /= double(rows.size()) * Hq;
  out.branch_union /= double(rows.size()) * Hq;
  return out;
}

TEST(NsaRecall, EqualsADirectComputationFromQKAndTheCompressedKeys) {
  TransformerLM model(nsa_model(), 5, Device::cpu(), DType::f32);
  const AttentionRecall recall = measure_attention_recall(model, random_tokens(), kRows);
  const Capture seen = capture(model);
  EXPECT_EQ(recall.selection, "nsa");
  ASSERT_EQ(recall.by_layer.size(), 2u);
  ASSERT_EQ(recall.union_by_layer.size(), 2u);
  ASSERT_EQ(seen.qs.size(), 2u);
  for (int layer = 0; layer < 2; ++layer) {
    const Direct direct =
        direct_recall(model, layer, seen.qs[size_t(layer)], seen.ks[size_t(layer)]);
    EXPECT_NEAR(recall.by_layer[size_t(layer)], direct.selected, 1e-9) << "layer " << layer;
    EXPECT_NEAR(recall.union_by_layer[size_t(layer)], direct.branch_union, 1e-9)
        << "layer " << layer;
    // Not a degenerate case: the selection leaves mass out, and the window adds some.
    EXPECT_LT(direct.selected, 0.95) << "layer " << layer;
    EXPECT_GT(direct.branch_union, direct.selected + 1e-3) << "layer " << layer;
  }
  // The probes are removed after the pass.
  EXPECT_EQ(model.config().attention.nsa.observer, nullptr);
  EXPECT_EQ(model.config().attention.observer, nullptr);
}

TEST(NsaRecall, FollowsTheCompressionWeightsWhichInfllmV2DoesNotSee) {
  TransformerLM model(nsa_model(), 5, Device::cpu(), DType::f32);
  const ModelConfig c = model.config();
  const attention::SparseConfig& cfg = c.attention.sparse;
  const std::vector<int> rows = recall_rows(cfg, T, kRows);
  auto infllm_v2_recall = [&](const Capture& seen) {  // InfLLM-V2's choice on layer 0's q, k
    std::vector<float> q(seen.qs[0].begin(), seen.qs[0].end()),
        k(seen.ks[0].begin(), seen.ks[0].end());
    return attention_recall(cfg, T, int(c.n_heads), int(c.n_kv_heads), int(c.head_dim), q.data(),
                            k.data(), rows);
  };
  const AttentionRecall before = measure_attention_recall(model, random_tokens(), kRows);
  const Capture seen_before = capture(model);

  // New layer-0 key compression: layer 0's q and k do not depend on it.
  Tensor& w1 = parameter(model, "blocks.0.attention.nsa.compress_k.w1");
  const Tensor redrawn = ops::normal(w1.shape(), 99, 0, 0.0, c.init_std, DType::f32, Device::cpu());
  std::copy_n(redrawn.data<float>(), w1.numel(), w1.data<float>());
  const AttentionRecall after = measure_attention_recall(model, random_tokens(), kRows);
  const Capture seen_after = capture(model);

  EXPECT_EQ(seen_after.qs[0], seen_before.qs[0]);
  EXPECT_EQ(seen_after.ks[0], seen_before.ks[0]);
  EXPECT_GT(std::abs(after.by_layer[0] - before.by_layer[0]), 1e-3)
      << "NSA's recall did not move with its compression weights: " << before.by_layer[0] << " and "
      << after.by_layer[0];
  EXPECT_NEAR(infllm_v2_recall(seen_after), infllm_v2_recall(seen_before), 1e-12);  // sum order
  const Direct direct = direct_recall(model, 0, seen_after.qs[0], seen_after.ks[0]);
  EXPECT_NEAR(after.by_layer[0], direct.selected, 1e-9);
}

}  // namespace
}  // namespace infllm::train
