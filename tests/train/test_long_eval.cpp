// The pieces of `infllm eval --long` against hand computations: loss by position, greedy answer
// scoring, attention recall (1 when topk covers every block; the softmax mass by hand on a small
// case), and the whole evaluation on a tiny model.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "core/rng.h"
#include "train/long_eval.h"

namespace infllm::train {
namespace {

TEST(LongEval, BucketLossesMatchAHandComputation) {
  // T = 5 positions, V = 3, buckets of 2: {0, 1}, {2, 3}, {4}; position 3 ignored.
  const std::vector<float> logits = {0, 0, 0, 1, 2, 3, -1, 0, 5, 9, 9, 9, 2, 0, 0};
  const std::vector<int32_t> targets = {0, 2, 1, -1, 0};
  std::vector<double> sums;
  std::vector<int64_t> counts;
  add_bucket_losses(logits.data(), targets.data(), 5, 3, 2, sums, counts);
  auto nll = [](std::vector<double> row, int target) {
    double z = 0;
    for (double x : row) z += std::exp(x);
    return std::log(z) - row[size_t(target)];
  };
  ASSERT_EQ(sums.size(), 3u);
  EXPECT_EQ(counts, (std::vector<int64_t>{2, 1, 1}));
  EXPECT_NEAR(sums[0], std::log(3.0) + nll({1, 2, 3}, 2), 1e-12);
  EXPECT_NEAR(sums[1], nll({-1, 0, 5}, 1), 1e-12);
  EXPECT_NEAR(sums[2], nll({2, 0, 0}, 0), 1e-12);
  // A second sequence adds to the same buckets.
  add_bucket_losses(logits.data(), targets.data(), 5, 3, 2, sums, counts);
  EXPECT_EQ(counts, (std::vector<int64_t>{4, 2, 2}));
}

TEST(LongEval, AnswerScoringIsGreedyTeacherForced) {
  // Logits [4, 3]: argmax 2, 1, 0, 0 (ties go to the lower index).
  const std::vector<float> logits = {0, 1, 2, 0, 3, 1, 5, 5, 0, 1, 0, 0};
  const std::vector<int32_t> argmax = argmax_rows(logits.data(), 4, 3);
  EXPECT_EQ(argmax, (std::vector<int32_t>{2, 1, 0, 0}));
  // Answer = tokens[2, 4), predicted at positions 1 and 2.
  EXPECT_EQ(answer_tokens_right(argmax, {7, 7, 1, 0}, 2), 2);
  EXPECT_EQ(answer_tokens_right(argmax, {7, 7, 1, 2}, 2), 1);
  EXPECT_EQ(answer_tokens_right(argmax, {7, 7, 2, 2}, 2), 0);
}

// Random q, k of one sequence.
std::vector<float> normal(size_t n, uint64_t seed, float scale) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = scale * philox_normal(i, seed);
  return x;
}

attention::SparseConfig small_config() {
  attention::SparseConfig c;
  c.kernel_size = 8;
  c.kernel_stride = 4;
  c.block_size = 16;
  c.init_blocks = 1;
  c.window_size = 16;
  c.topk = 3;
  c.dense_len = 0;
  return c;
}

TEST(LongEval, RecallIsOneWhenTopkCoversEveryBlock) {
  const int T = 256, Hq = 4, Hkv = 2, D = 16;
  attention::SparseConfig c = small_config();
  c.topk = T / c.block_size;  // every block
  const std::vector<float> q = normal(size_t(T) * Hq * D, 1, 2.f),
                           k = normal(size_t(T) * Hkv * D, 2, 2.f);
  std::vector<int> rows(T);
  std::iota(rows.begin(), rows.end(), 0);
  EXPECT_NEAR(attention_recall(c, T, Hq, Hkv, D, q.data(), k.data(), rows), 1.0, 1e-12);
}

TEST(LongEval, RecallIsTheSelectedSoftmaxMass) {
  // One query row at t = 63: blocks 0..3 causal, 16 keys each. Forced: init block 0 and the
  // own block 3 (window = one block). Keys of block 2 align with q (score 4, the rest 0), so
  // with topk 3 the selection adds block 2 and only block 1's mass is lost; with topk 2 (the
  // forced blocks only) blocks 1 and 2 are. Softmax masses by hand.
  const int T = 64, Hq = 1, Hkv = 1, D = 4;
  attention::SparseConfig c = small_config();
  std::vector<float> q(size_t(T) * D, 0.f), k(size_t(T) * D, 0.f);
  for (int t = 0; t < T; ++t) q[size_t(t) * D] = 1.f;
  for (int j = 32; j < 48; ++j) k[size_t(j) * D] = 8.f;  // q.k / sqrt(4) = 4
  const double z = 16 * std::exp(4.0) + 48;
  EXPECT_NEAR(attention_recall(c, T, Hq, Hkv, D, q.data(), k.data(), {63}), 1 - 16 / z, 1e-12);
  c.topk = 2;
  EXPECT_NEAR(attention_recall(c, T, Hq, Hkv, D, q.data(), k.data(), {63}), 32 / z, 1e-12);
}

TEST(LongEval, RecallRowsStartWhereSelectionDropsBlocks) {
  attention::SparseConfig c = small_config();  // topk 3 x 16: rows from 48 on
  const std::vector<int> rows = recall_rows(c, 256, 4);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_GE(rows.front(), 48);
  EXPECT_LT(rows.back(), 256);
  EXPECT_TRUE(std::is_sorted(rows.begin(), rows.end()));
  EXPECT_EQ(recall_rows(c, 40, 8).front(), 2);  // T too short to drop any: rows over [0, T)
}

}  // namespace
}  // namespace infllm::train
