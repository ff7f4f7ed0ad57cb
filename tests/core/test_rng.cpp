// Philox fills: statistics, determinism, and counter addressing (the property that makes CPU
// and CUDA draws identical).
#include "core/rng.h"

#include <cmath>

#include "tests/test_util.h"

namespace infllm {
namespace {

TEST(Rng, UniformAndNormalHaveTheRightMoments) {
  const int64_t n = 200000;
  std::vector<float> u = ops::uniform({n}, 42, 0, -1.0, 3.0).to_vector<float>();
  std::vector<float> z = ops::normal({n}, 43, 0, 2.0, 0.5).to_vector<float>();
  double mu = 0, mz = 0, vz = 0;
  for (float v : u) {
    ASSERT_GE(v, -1.0f);
    ASSERT_LT(v, 3.0f);
    mu += v / n;
  }
  for (float v : z) mz += v / n;
  for (float v : z) vz += (v - mz) * (v - mz) / n;
  EXPECT_NEAR(mu, 1.0, 0.02);
  EXPECT_NEAR(mz, 2.0, 0.01);
  EXPECT_NEAR(std::sqrt(vz), 0.5, 0.01);
}

TEST(Rng, SameSeedAndOffsetSameNumbersAndOffsetsShiftTheStream) {
  Tensor a = ops::normal({1000}, 7, 0, 0, 1);
  Tensor b = ops::normal({1000}, 7, 0, 0, 1);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  std::vector<float> shifted = ops::normal({990}, 7, 10, 0, 1).to_vector<float>();
  std::vector<float> full = a.to_vector<float>();
  for (size_t i = 0; i < shifted.size(); ++i) ASSERT_EQ(shifted[i], full[i + 10]);
  EXPECT_NE(ops::normal({8}, 8, 0, 0, 1).to_vector<float>(),
            ops::normal({8}, 7, 0, 0, 1).to_vector<float>());
}

TEST(Rng, PhiloxMatchesThePublishedKnownAnswer) {
  // Random123's known-answer test for philox4x32-10 with counter 0 and key 0.
  Philox4 r = philox4x32(0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
}

}  // namespace
}  // namespace infllm
