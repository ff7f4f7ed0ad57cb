#include <gtest/gtest.h>

#include <numeric>

#include "data/eval_windows.h"
#include "data/token_file.h"
#include "test_util.h"

namespace infllm::data {
namespace {

using testing::TempDir;

class EvalWindowsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("positions.h5");
    std::vector<uint32_t> tokens(kTokens);
    std::iota(tokens.begin(), tokens.end(), 0u);
    TokenFileWriter writer(path_, {kTokens, "positions", "test"});
    writer.append_document(tokens);
    writer.close();
  }
  static constexpr int64_t kTokens = 1000;
  TempDir dir_;
  std::string path_;
};

TEST_F(EvalWindowsTest, FirstWindowsInOrderOverAllRanks) {
  const int64_t T = 16;
  for (int world = 1; world <= 3; ++world) {
    std::vector<int> seen(100, 0);
    int64_t batches = -1;
    for (int rank = 0; rank < world; ++rank) {
      const EvalWindows eval(path_, {T, 4, 21, rank, world});
      EXPECT_EQ(eval.num_windows(), 21);
      if (batches >= 0) {
        EXPECT_EQ(eval.num_batches(), batches) << "ranks disagree";
      }
      batches = eval.num_batches();
      for (int64_t i = 0; i < eval.num_batches(); ++i) {
        const EvalBatch batch = eval.batch(i);
        ASSERT_LE(batch.rows, 4);
        for (int64_t b = 0; b < batch.rows; ++b) {
          const int64_t window = (i * world + rank) * 4 + b;
          for (int64_t t = 0; t < T; ++t) {
            ASSERT_EQ(batch.inputs[b * T + t], window * T + t);
            ASSERT_EQ(batch.targets[b * T + t], window * T + t + 1);
          }
          ++seen[window];
        }
      }
    }
    for (int w = 0; w < 100; ++w) EXPECT_EQ(seen[w], w < 21 ? 1 : 0) << "world " << world;
  }
}

TEST_F(EvalWindowsTest, ShortFilesGiveFewerWindows) {
  const EvalWindows eval(path_, {100, 2, 1000, 0, 1});
  EXPECT_EQ(eval.num_windows(), 9);  // (1000 - 1) / 100
  EXPECT_EQ(eval.num_batches(), 5);
  EXPECT_EQ(eval.batch(4).rows, 1);
  EXPECT_EQ(eval.batch(4).targets.back(), 900);
  testing::expect_error(
      [&] {
        EvalWindows(path_, {1000, 1, 4, 0, 1});
      },
      {path_, "1000 tokens", "sequence length"});
}

}  // namespace
}  // namespace infllm::data
