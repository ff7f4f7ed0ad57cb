// The data position of a run is a count of windows consumed by all ranks together, so a run
// resumed with another number of ranks (or another batch size) continues with exactly the
// windows the uninterrupted run would have taken next.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"

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

// data.task_rate mixes synthetic tasks into the windows: each row is a whole task sequence
// (targets its inputs shifted by one, the answer last), picked by (seed, sample) alone.
TEST(BatchSource, TaskRateReplacesWindowsWithTaskSequences) {
  Recipe recipe = tiny_recipe(4);
  recipe.data.seq_len = 512;
  recipe.data.task_rate = 0.5;
  recipe.data.task_kinds = {"passkey", "needle"};
  BatchSource mixed(recipe, Device::cpu(), 0, 1), again(recipe, Device::cpu(), 0, 1);
  int tasks = 0, windows = 0;
  for (int step = 0; step < 8; ++step) {
    TokenBatch batch = mixed.next();
    EXPECT_EQ(batch.inputs.to_vector<int32_t>(), again.next().inputs.to_vector<int32_t>());
    const std::vector<int32_t> in = batch.inputs.to_vector<int32_t>();
    const std::vector<int32_t> out = batch.targets.to_vector<int32_t>();
    for (size_t row = 0; row < 4; ++row) {
      std::string text;
      for (size_t t = 0; t < 512; ++t) text.push_back(char(in[row * 512 + t]));
      const bool task = in[row * 512] == 256 &&
                        (text.find("What is the pass key?") != std::string::npos ||
                         text.find("What is the special magic number") != std::string::npos);
      tasks += task;
      windows += !task;
      for (size_t t = 0; t + 1 < 512; ++t) ASSERT_EQ(out[row * 512 + t], in[row * 512 + t + 1]);
      if (task) {  // the last target is the answer's last digit
        const int32_t last = out[row * 512 + 511];
        EXPECT_TRUE(last >= '0' && last <= '9') << last;
      }
    }
  }
  EXPECT_GT(tasks, 4);
  EXPECT_GT(windows, 4);

  recipe.data.seq_len = 64;  // too short for a task
  EXPECT_THROW(BatchSource(recipe, Device::cpu(), 0, 1), Error);
}

}  // namespace
}  // namespace infllm::train
