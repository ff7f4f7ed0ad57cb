#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "data/window_order.h"

namespace infllm::data {
namespace {

TEST(WindowOrder, CountsWindows) {
  EXPECT_EQ(WindowOrder(1001, 10, 0, false).num_windows(), 100);  // 100 * 10 + 1 tokens
  EXPECT_EQ(WindowOrder(1000, 10, 0, false).num_windows(), 99);
  EXPECT_EQ(WindowOrder(1000, 10, 0, true).num_windows(), 99);  // leaves T tokens for the shift
  EXPECT_EQ(WindowOrder(999, 10, 0, true).num_windows(), 98);
  EXPECT_EQ(WindowOrder(10, 10, 0, false).num_windows(), 0);
}

TEST(WindowOrder, EachEpochIsAPermutation) {
  for (int64_t n : {1, 2, 3, 5, 16, 17, 100, 257, 1000, 4097, 100000}) {
    const WindowOrder order(n * 8 + 1, 8, 1234 + n, false);
    ASSERT_EQ(order.num_windows(), n);
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      std::vector<char> seen(n, 0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t w = order.permute(epoch, i);
        ASSERT_TRUE(0 <= w && w < n) << "n " << n << " epoch " << epoch << " i " << i;
        ASSERT_FALSE(seen[w]) << "window " << w << " visited twice, n " << n;
        seen[w] = 1;
      }
    }
  }
}

TEST(WindowOrder, OrdersDependOnSeedAndEpoch) {
  const int64_t n = 1000;
  const WindowOrder a(n * 4 + 1, 4, 7, false), b(n * 4 + 1, 4, 8, false);
  auto sequence = [&](const WindowOrder& order, int64_t epoch) {
    std::vector<int64_t> s(n);
    for (int64_t i = 0; i < n; ++i) s[i] = order.permute(epoch, i);
    return s;
  };
  std::vector<int64_t> identity(n);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(sequence(a, 0), identity);
  EXPECT_NE(sequence(a, 0), sequence(a, 1));
  EXPECT_NE(sequence(a, 0), sequence(b, 0));
  EXPECT_EQ(sequence(a, 2), sequence(WindowOrder(n * 4 + 1, 4, 7, false), 2));
  // Well mixed: few windows keep their neighbour from the identity order.
  const std::vector<int64_t> s = sequence(a, 0);
  int64_t adjacent = 0;
  for (int64_t i = 0; i + 1 < n; ++i) adjacent += std::abs(s[i + 1] - s[i]) == 1;
  EXPECT_LT(adjacent, n / 50);
}

TEST(WindowOrder, ShiftedWindowsStayInsideTheStream) {
  const int64_t T = 32, tokens = 5000;
  const WindowOrder order(tokens, T, 99, true);
  const int64_t n = order.num_windows();
  std::vector<int64_t> offsets;
  for (int64_t sample = 0; sample < 6 * n; ++sample) {
    const int64_t start = order.window_start(sample);
    ASSERT_GE(start, 0);
    ASSERT_LE(start + T + 1, tokens) << "sample " << sample;
    const int64_t epoch = sample / n;
    EXPECT_EQ((start - order.offset(epoch)) % T, 0);
    if (sample % n == 0) offsets.push_back(order.offset(epoch));
  }
  for (int64_t offset : offsets) EXPECT_TRUE(0 <= offset && offset < T);
  std::sort(offsets.begin(), offsets.end());
  EXPECT_GT(std::unique(offsets.begin(), offsets.end()) - offsets.begin(), 1)
      << "every epoch got the same offset";
  EXPECT_EQ(WindowOrder(tokens, T, 99, false).offset(3), 0);
}

}  // namespace
}  // namespace infllm::data
