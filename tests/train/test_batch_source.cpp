// The data position of a run is a count of windows consumed by all ranks together, so a run
// resumed with another number of ranks (or another batch size) continues with exactly the
// windows the uninterrupted run would have taken next.
#include <gtest/gtest.h>

#include <vector>

#include "train/batch_source.h"

namespace infllm::train {
namespace {

Recipe tiny_recipe(int batch_size) {
  Recipe recipe = load_recipe("tests/train/recipes/tiny.yaml", {});
  recipe.data.batch_size = batch_size;
  return recipe;
}

// The input rows of the next batch, one vector of tokens per window.
std::vector<std::vector<int32_t>> next_windows(BatchSource& source) {
  TokenBatch batch = source.next();
  std::vector<int32_t> flat = batch.inputs.to_vector<int32_t>();
  const size_t T = size_t(batch.inputs.size(1));
  std::vector<std::vector<int32_t>> rows;
  for (size_t r = 0; r * T < flat.size(); ++r)
    rows.emplace_back(flat.begin() + r * T, flat.begin() + (r + 1) * T);
  return rows;
}

TEST(BatchSource, ARunResumedOnMoreRanksContinuesWithTheSameWindows) {
  // One rank, batch 4: three batches, windows 0..11.
  const Recipe four = tiny_recipe(4), two = tiny_recipe(2);
  BatchSource single(four, Device::cpu(), 0, 1);
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 3; ++i)
    for (auto& row : next_windows(single)) expected.push_back(row);
  EXPECT_EQ(single.global_samples(), 12);

  // Stopped after two batches (8 windows); resumed on 2 ranks of batch 2: rank 0 must take
  // windows 8, 9 and rank 1 windows 10, 11.
  BatchSource rank0(two, Device::cpu(), 0, 2), rank1(two, Device::cpu(), 1, 2);
  EXPECT_TRUE(rank0.seek_global_samples(8));
  EXPECT_TRUE(rank1.seek_global_samples(8));
  std::vector<std::vector<int32_t>> got = next_windows(rank0);
  for (auto& row : next_windows(rank1)) got.push_back(row);
  ASSERT_EQ(got.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(got[i], expected[8 + i]) << "window " << 8 + i;
  EXPECT_EQ(rank0.global_samples(), 12);
}

TEST(BatchSource, APositionInsideAGlobalBatchRoundsDown) {
  BatchSource rank0(tiny_recipe(2), Device::cpu(), 0, 2);  // global batch: 4 windows
  EXPECT_FALSE(rank0.seek_global_samples(10));
  EXPECT_EQ(rank0.global_samples(), 8);
}

}  // namespace
}  // namespace infllm::train
