// Divisor: multiply-high division against the / and % operators, over every small numerator and
// random ones up to 2^31 - 1, for every divisor a kernel may pass (heads per group and beyond).
#include "core/divisor.h"

#include <gtest/gtest.h>

#include <climits>
#include <random>

namespace infllm {
namespace {

void expect_exact(const Divisor& d, int n) {
  ASSERT_EQ(d.quotient(n), n / d.value) << n << " / " << d.value;
  ASSERT_EQ(d.remainder(n), n % d.value) << n << " % " << d.value;
}

TEST(Divisor, MatchesIntegerDivisionOverTheWholeNumeratorRange) {
  std::mt19937 rng(2026);
  std::uniform_int_distribution<int> any(0, INT_MAX);
  for (int value :
       {1, 2, 3, 5, 6, 7, 8, 9, 12, 15, 16, 17, 31, 64, 100, 1000, 65535, 1 << 20, INT_MAX}) {
    const Divisor d(value);
    for (int n = 0; n < (1 << 16); ++n) expect_exact(d, n);
    for (int n : {INT_MAX, INT_MAX - 1, value - 1, value, value == INT_MAX ? 0 : value + 1})
      expect_exact(d, n);
    for (int i = 0; i < 100000; ++i) expect_exact(d, any(rng));
  }
}

TEST(Divisor, EveryGroupSizeOverEveryQueryRowOfALongSequence) {
  // Query rows (b T + t) Hq + h reach B T Hq: 2^23 numerators cover 128K tokens x 64 heads.
  for (int value = 1; value <= 16; ++value) {
    const Divisor d(value);
    for (int n = 0; n < (1 << 23); n += 1 + (n >> 16)) expect_exact(d, n);
  }
}

}  // namespace
}  // namespace infllm
