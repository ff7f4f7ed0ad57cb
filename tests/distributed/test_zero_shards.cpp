// ZeRO-1 shard planning: exact cover, no overlap, balance, alignment, and the round trip.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "distributed/zero_shards.h"

namespace infllm::distributed {
namespace {

void check_plan(const std::vector<size_t>& counts, int world, size_t alignment) {
  ZeroShardPlan plan = plan_zero_shards(counts, world, alignment);
  size_t total = 0;
  for (size_t c : counts) total += c;
  ASSERT_EQ(plan.total_elements, total);
  EXPECT_EQ(plan.shard_elements % alignment, 0u);
  EXPECT_GE(plan.padded_elements(), total);
  EXPECT_LT(plan.padded_elements() - total, world * alignment + world) << "too much padding";

  // Every real flat element is owned by exactly one rank, and the piece's three coordinates
  // (parameter element, shard slot, flat index) agree.
  std::vector<int> owners(total, 0);
  size_t most = 0, least = total;
  for (int rank = 0; rank < world; ++rank) {
    size_t owned = 0, shard_cursor = 0;
    for (const ShardPiece& piece : shard_pieces(plan, rank)) {
      ASSERT_LT(piece.param, counts.size());
      ASSERT_LT(piece.begin, piece.end);
      ASSERT_LE(piece.end, counts[piece.param]);
      EXPECT_EQ(piece.shard_offset, shard_cursor) << "pieces of a shard are contiguous";
      EXPECT_EQ(plan.shard_begin(rank) + piece.shard_offset,
                plan.param_offsets[piece.param] + piece.begin);
      for (size_t e = piece.begin; e < piece.end; ++e)
        ++owners[plan.param_offsets[piece.param] + e];
      owned += piece.end - piece.begin;
      shard_cursor += piece.end - piece.begin;
    }
    EXPECT_LE(shard_cursor, plan.shard_elements);
    most = std::max(most, owned);
    least = std::min(least, owned);
  }
  for (size_t i = 0; i < total; ++i) ASSERT_EQ(owners[i], 1) << "flat element " << i;
  if (total > 0) {
    EXPECT_LE(most - least, world * alignment) << "shards unbalanced";
  }

  // Scatter to shards, gather back: the parameters come back bit for bit, padding is zero.
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  std::vector<std::vector<float>> params(counts.size());
  std::vector<const float*> sources;
  for (size_t p = 0; p < counts.size(); ++p) {
    params[p].resize(counts[p]);
    for (float& x : params[p]) x = uniform(rng) + 2.f;  // never zero
    sources.push_back(params[p].data());
  }
  std::vector<std::vector<float>> gathered(counts.size());
  std::vector<float*> targets;
  for (size_t p = 0; p < counts.size(); ++p) {
    gathered[p].assign(counts[p], 0.f);
    targets.push_back(gathered[p].data());
  }
  std::vector<float> flat(plan.padded_elements(), -1.f);
  for (int rank = 0; rank < world; ++rank) {
    std::vector<float> shard(plan.shard_elements, -1.f);
    copy_params_to_shard(plan, rank, sources, shard.data());
    std::copy(shard.begin(), shard.end(), flat.begin() + plan.shard_begin(rank));
    copy_shard_to_params(plan, rank, shard.data(), targets);
  }
  EXPECT_EQ(gathered, params);
  for (size_t i = total; i < flat.size(); ++i) ASSERT_EQ(flat[i], 0.f) << "padding " << i;
  // The flat buffer (what all_gather produces) holds each parameter at its offset.
  for (size_t p = 0; p < counts.size(); ++p)
    for (size_t e = 0; e < counts[p]; ++e) ASSERT_EQ(flat[plan.param_offsets[p] + e], params[p][e]);
}

TEST(ZeroShards, RandomModelsCoverExactlyAndRoundTrip) {
  std::mt19937_64 rng(std::random_device{}());
  for (int trial = 0; trial < 150; ++trial) {
    std::vector<size_t> counts(1 + rng() % 20);
    for (size_t& c : counts) c = rng() % 7 == 0 ? rng() % 3 : 1 + rng() % 5000;  // some empty
    int world = 1 + static_cast<int>(rng() % 8);
    size_t alignment = std::vector<size_t>{1, 16, 64, 128}[rng() % 4];
    check_plan(counts, world, alignment);
  }
}

TEST(ZeroShards, SmallExample) {
  // 100 elements over 4 ranks, alignment 16: shards of 32; the last rank holds 4 real elements.
  ZeroShardPlan plan = plan_zero_shards({60, 40}, 4, 16);
  EXPECT_EQ(plan.shard_elements, 32u);
  std::vector<ShardPiece> rank1 = shard_pieces(plan, 1);
  ASSERT_EQ(rank1.size(), 2u);
  EXPECT_EQ(rank1[0].param, 0u);
  EXPECT_EQ(rank1[0].begin, 32u);
  EXPECT_EQ(rank1[0].end, 60u);
  EXPECT_EQ(rank1[1].param, 1u);
  EXPECT_EQ(rank1[1].begin, 0u);
  EXPECT_EQ(rank1[1].end, 4u);
  EXPECT_EQ(rank1[1].shard_offset, 28u);
  std::vector<ShardPiece> rank3 = shard_pieces(plan, 3);
  ASSERT_EQ(rank3.size(), 1u);
  EXPECT_EQ(rank3[0].begin, 36u);
  EXPECT_EQ(rank3[0].end, 40u);
}

TEST(ZeroShards, RejectsBadArguments) {
  EXPECT_THROW(plan_zero_shards({10}, 0), Error);
  EXPECT_THROW(shard_pieces(plan_zero_shards({10}, 2), 2), Error);
}

}  // namespace
}  // namespace infllm::distributed
