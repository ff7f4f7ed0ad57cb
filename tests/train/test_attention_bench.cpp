// `infllm bench --attention-only` (train/attention_bench.h): the path each attention setting
// takes at a length, and the timing of every path on the CPU (runs forward and backward, gives
// positive times).
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "train/attention_bench.h"

namespace infllm::train {
namespace {

ModelConfig tiny_model(attention::AttentionMode mode, attention::AttentionVariant variant) {
  ModelConfig c;
  c.d_model = 32;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.attention.mode = mode;
  c.attention.variant = variant;
  c.attention.sparse = {.kernel_size = 8,
                        .kernel_stride = 4,
                        .block_size = 16,
                        .init_blocks = 1,
                        .window_size = 16,
                        .topk = 3,
                        .dense_len = 128};
  c.attention.nsa.window_size = 32;
  return c;
}

TEST(AttentionBench, PathFollowsModeVariantAndLength) {
  using attention::AttentionMode, attention::AttentionVariant;
  EXPECT_EQ(attention_path(tiny_model(AttentionMode::dense, AttentionVariant::nsa), 4096), "dense");
  EXPECT_EQ(attention_path(tiny_model(AttentionMode::sparse, AttentionVariant::infllm_v2), 64),
            "infllm_v2");
  EXPECT_EQ(attention_path(tiny_model(AttentionMode::sparse, AttentionVariant::nsa), 64), "nsa");
  // auto: dense up to dense_len (128), the variant's sparse path above.
  EXPECT_EQ(attention_path(tiny_model(AttentionMode::automatic, AttentionVariant::nsa), 128),
            "dense");
  EXPECT_EQ(attention_path(tiny_model(AttentionMode::automatic, AttentionVariant::nsa), 256),
            "nsa");
}

TEST(AttentionBench, EveryPathRunsForwardAndBackward) {
  using attention::AttentionMode, attention::AttentionVariant;
  for (auto [mode, variant] : {std::pair{AttentionMode::dense, AttentionVariant::infllm_v2},
                               {AttentionMode::sparse, AttentionVariant::infllm_v2},
                               {AttentionMode::sparse, AttentionVariant::nsa}}) {
    const ModelConfig model = tiny_model(mode, variant);
    const AttentionBenchResult r =
        bench_attention_core(model, 2, 256, Device::cpu(), DType::f32, 2, 1, 7);
    EXPECT_EQ(r.path, attention_path(model, 256));
    EXPECT_EQ(r.B, 2);
    EXPECT_EQ(r.T, 256);
    EXPECT_EQ(r.Hq, 4);
    EXPECT_EQ(r.Hkv, 2);
    EXPECT_EQ(r.D, 8);
    EXPECT_TRUE(std::isfinite(r.forward_ms) && r.forward_ms > 0) << r.path;
    EXPECT_TRUE(std::isfinite(r.forward_backward_ms) && r.forward_backward_ms > 0) << r.path;
  }
  EXPECT_THROW(bench_attention_core(tiny_model(AttentionMode::sparse, AttentionVariant::nsa), 1,
                                    256, Device::cpu(), DType::f32, 0, 1, 7),
               Error);
}

}  // namespace
}  // namespace infllm::train
