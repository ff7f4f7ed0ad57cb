// Gradient bucket planning invariants on random parameter lists.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "distributed/buckets.h"

namespace infllm::distributed {
namespace {

void check_plan(const std::vector<size_t>& sizes, size_t cap, size_t alignment) {
  std::vector<GradientBucket> buckets = plan_gradient_buckets(sizes, cap, alignment);
  std::vector<int> seen(sizes.size(), 0);
  size_t expected_next = sizes.size();  // parameters come out last to first, without gaps
  for (size_t b = 0; b < buckets.size(); ++b) {
    const GradientBucket& bucket = buckets[b];
    ASSERT_FALSE(bucket.params.empty());
    ASSERT_EQ(bucket.params.size(), bucket.offsets.size());
    size_t end = 0;
    for (size_t i = 0; i < bucket.params.size(); ++i) {
      size_t p = bucket.params[i];
      ASSERT_LT(p, sizes.size());
      EXPECT_EQ(p, --expected_next) << "bucket " << b << " breaks reverse order";
      ++seen[p];
      EXPECT_EQ(bucket.offsets[i] % alignment, 0u);
      EXPECT_GE(bucket.offsets[i], end) << "parameters overlap in bucket " << b;
      EXPECT_LT(bucket.offsets[i] - end, alignment) << "more padding than alignment needs";
      end = bucket.offsets[i] + sizes[p];
    }
    EXPECT_EQ(bucket.bytes, end);
    if (bucket.params.size() > 1) {
      EXPECT_LE(bucket.bytes, cap) << "bucket " << b;
    }
    if (sizes[bucket.params[0]] >= cap) {
      EXPECT_EQ(bucket.params.size(), 1u) << "a parameter larger than the cap must be alone";
    }
    // Greedy: the next bucket's first parameter would not have fitted into this one.
    if (b + 1 < buckets.size() && bucket.bytes < cap) {
      size_t next = sizes[buckets[b + 1].params[0]];
      size_t padded = (bucket.bytes + alignment - 1) / alignment * alignment;
      EXPECT_GT(padded + next, cap) << "bucket " << b << " closed early";
    }
  }
  for (size_t p = 0; p < sizes.size(); ++p) EXPECT_EQ(seen[p], 1) << "param " << p;
}

TEST(GradientBuckets, RandomModelsKeepTheInvariants) {
  std::mt19937_64 rng(std::random_device{}());
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<size_t> sizes(1 + rng() % 60);
    for (size_t& s : sizes) {
      // Mix of tiny (norm weights), medium and huge (embedding) gradients.
      int kind = rng() % 10;
      s = kind == 0 ? 4 * (1 + rng() % 64) : kind < 9 ? 4 * (1 + rng() % 100000) : 4 << 20;
    }
    size_t cap = size_t(1 + rng() % 4) << 18;
    size_t alignment = size_t(1) << (rng() % 9);
    check_plan(sizes, cap, alignment);
  }
}

TEST(GradientBuckets, SmallExample) {
  // Registration order a=100, b=300, c=50, d=1000 bytes; cap 400, no alignment.
  std::vector<GradientBucket> buckets = plan_gradient_buckets({100, 300, 50, 1000}, 400, 1);
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0].params, (std::vector<size_t>{3}));     // d alone: larger than the cap
  EXPECT_EQ(buckets[1].params, (std::vector<size_t>{2, 1}));  // c + b = 350
  EXPECT_EQ(buckets[1].offsets, (std::vector<size_t>{0, 50}));
  EXPECT_EQ(buckets[2].params, (std::vector<size_t>{0}));
}

TEST(GradientBuckets, RejectsBadArguments) {
  EXPECT_THROW(plan_gradient_buckets({4, 4}, 0), Error);
  EXPECT_THROW(plan_gradient_buckets({4, 4}, 1024, 24), Error);
  EXPECT_TRUE(plan_gradient_buckets({}, 1024).empty());
}

}  // namespace
}  // namespace infllm::distributed
