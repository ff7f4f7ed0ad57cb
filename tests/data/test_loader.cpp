#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <set>

#include "data/loader.h"
#include "test_util.h"

namespace infllm::data {
namespace {

using testing::expect_error;
using testing::TempDir;

// A token file whose token at position p is p: a batch row then says which window it read.
class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("positions.h5");
    std::vector<uint32_t> tokens(kTokens);
    std::iota(tokens.begin(), tokens.end(), 0u);
    TokenFileWriter writer(path_, {kTokens, "positions", "test"});
    for (int64_t start = 0; start < kTokens; start += 1000) {
      writer.append_document(
          std::span(tokens).subspan(start, std::min<int64_t>(1000, kTokens - start)));
    }
    writer.close();
  }

  LoaderOptions options(int64_t B, int rank, int world, int prefetch) const {
    LoaderOptions o;
    o.T = kT;
    o.B = B;
    o.rank = rank;
    o.world = world;
    o.seed = 2024;
    o.prefetch = prefetch;
    return o;
  }

  // The start positions of the batch rows; also checks that every row is a window.
  static std::vector<int64_t> starts(const Batch& batch) {
    std::vector<int64_t> s;
    for (int64_t b = 0; b < batch.B; ++b) {
      const int32_t first = batch.inputs[b * batch.T];
      for (int64_t t = 0; t < batch.T; ++t) {
        EXPECT_EQ(batch.inputs[b * batch.T + t], first + t);
        EXPECT_EQ(batch.targets[b * batch.T + t], first + t + 1);
      }
      s.push_back(first);
    }
    return s;
  }

  // Rows of `steps` batches of `loader` from its current step on.
  static std::vector<int64_t> run(Loader& loader, int64_t steps) {
    std::vector<int64_t> all;
    for (int64_t s = 0; s < steps; ++s) {
      const std::vector<int64_t> rows = starts(loader.next());
      all.insert(all.end(), rows.begin(), rows.end());
    }
    return all;
  }

  // The global sequence of a run over all ranks: step by step, rank by rank.
  std::vector<int64_t> global_run(int world, int64_t B, int64_t first_step, int64_t steps,
                                  int prefetch) {
    std::vector<std::unique_ptr<Loader>> ranks;
    for (int r = 0; r < world; ++r) {
      ranks.push_back(std::make_unique<Loader>(path_, options(B, r, world, prefetch)));
      ranks.back()->set_step(first_step);
    }
    std::vector<int64_t> all;
    for (int64_t s = 0; s < steps; ++s) {
      for (auto& loader : ranks) {
        const std::vector<int64_t> rows = starts(loader->next());
        all.insert(all.end(), rows.begin(), rows.end());
      }
    }
    return all;
  }

  static constexpr int64_t kTokens = 40000;
  static constexpr int64_t kT = 64;
  TempDir dir_;
  std::string path_;
};

TEST_F(LoaderTest, SameSeedAndStepGiveTheSameBatch) {
  Loader a(path_, options(4, 0, 1, 2)), b(path_, options(4, 0, 1, 2));
  EXPECT_EQ(run(a, 30), run(b, 30));
  LoaderOptions other = options(4, 0, 1, 2);
  other.seed = 2025;
  Loader c(path_, other);
  a.set_step(0);
  EXPECT_NE(run(a, 30), run(c, 30));
}

TEST_F(LoaderTest, ResumeEqualsContinuedRun) {
  Loader continued(path_, options(3, 0, 1, 2));
  const std::vector<int64_t> all = run(continued, 50);
  EXPECT_EQ(continued.step(), 50);
  for (int64_t resume : {0, 1, 7, 23, 49}) {
    Loader resumed(path_, options(3, 0, 1, 2));
    resumed.set_step(resume);
    EXPECT_EQ(resumed.step(), resume);
    const std::vector<int64_t> rest = run(resumed, 50 - resume);
    EXPECT_EQ(rest, std::vector<int64_t>(all.begin() + 3 * resume, all.end())) << "at " << resume;
  }
  // Jumping back and forth on a loader whose prefetch thread is running.
  continued.set_step(10);
  EXPECT_EQ(run(continued, 5), std::vector<int64_t>(all.begin() + 30, all.begin() + 45));
  continued.set_step(2);
  EXPECT_EQ(run(continued, 1), std::vector<int64_t>(all.begin() + 6, all.begin() + 9));
}

TEST_F(LoaderTest, PrefetchDoesNotChangeBatches) {
  Loader synchronous(path_, options(5, 0, 1, 0));
  const std::vector<int64_t> expected = run(synchronous, 40);
  for (int depth : {1, 2, 4}) {
    Loader prefetched(path_, options(5, 0, 1, depth));
    EXPECT_EQ(run(prefetched, 40), expected) << "prefetch depth " << depth;
  }
  Loader prefetched(path_, options(5, 0, 1, 3));
  synchronous.set_step(17);
  prefetched.set_step(17);
  EXPECT_EQ(run(prefetched, 9), run(synchronous, 9));
}

TEST_F(LoaderTest, RanksCoverEveryWindowOncePerEpoch) {
  for (int world = 1; world <= 4; ++world) {
    const int64_t B = 3;
    std::vector<std::unique_ptr<Loader>> ranks;
    for (int r = 0; r < world; ++r) {
      ranks.push_back(std::make_unique<Loader>(path_, options(B, r, world, 2)));
    }
    const int64_t n = ranks[0]->num_windows();
    ASSERT_EQ(n, (kTokens - kT) / kT);
    const WindowOrder& order = ranks[0]->order();
    // Two epochs: each must visit every window exactly once.
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      std::vector<int> visits(n, 0);
      const int64_t global_batch = world * B;
      for (int64_t step = epoch * n / global_batch; step <= ((epoch + 1) * n - 1) / global_batch;
           ++step) {
        for (int r = 0; r < world; ++r) {
          ranks[r]->set_step(step);
          const std::vector<int64_t> rows = starts(ranks[r]->next());
          for (int64_t b = 0; b < B; ++b) {
            const int64_t sample = step * global_batch + r * B + b;
            if (sample / n != epoch) continue;  // belongs to the neighbouring epoch
            const int64_t window = (rows[b] - order.offset(epoch)) / kT;
            ASSERT_EQ((rows[b] - order.offset(epoch)) % kT, 0);
            ASSERT_TRUE(0 <= window && window < n);
            ++visits[window];
          }
        }
      }
      for (int64_t w = 0; w < n; ++w) {
        ASSERT_EQ(visits[w], 1) << "world " << world << " epoch " << epoch << " window " << w;
      }
    }
  }
}

TEST_F(LoaderTest, ResumingWithAnotherWorldSizeContinuesTheGlobalSequence) {
  // Global batch 12 = 1 x 12 = 2 x 6 = 3 x 4 = 4 x 3.
  const std::vector<int64_t> reference = global_run(2, 6, 0, 20, 2);
  EXPECT_EQ(global_run(1, 12, 0, 20, 0), reference);
  std::vector<int64_t> switched = global_run(2, 6, 0, 8, 2);
  for (auto [world, B, first, steps] : {std::tuple{3, 4, 8, 5}, std::tuple{4, 3, 13, 7}}) {
    const std::vector<int64_t> part = global_run(world, B, first, steps, 1);
    switched.insert(switched.end(), part.begin(), part.end());
  }
  EXPECT_EQ(switched, reference);
}

TEST_F(LoaderTest, ReportsEpochAndBatchLayout) {
  Loader loader(path_, options(4, 0, 2, 2));
  const int64_t n = loader.num_windows();
  loader.set_step(n / 8 + 1);  // 8 samples per step
  EXPECT_EQ(loader.epoch(), 1);
  const Batch batch = loader.next();
  EXPECT_EQ(batch.step, n / 8 + 1);
  EXPECT_EQ(batch.B, 4);
  EXPECT_EQ(batch.T, kT);
  EXPECT_EQ(batch.inputs.size(), 4u * kT);
  EXPECT_EQ(batch.targets.size(), 4u * kT);
  EXPECT_EQ(loader.vocab_size(), kTokens);
}

TEST_F(LoaderTest, ThreadErrorsAreRethrownInNext) {
  // Token 3000 is outside the vocabulary: the window holding it fails to read.
  testing::RawTokenFile spec;
  spec.vocab_size = 258;
  spec.tokens.assign(4000, 65);
  spec.tokens[3000] = 999;
  spec.offsets = {0};
  const std::string bad = dir_.file("bad.h5");
  testing::write_raw_token_file(bad, spec);
  LoaderOptions o = options(8, 0, 1, 3);
  o.T = 100;
  Loader loader(bad, o);
  expect_error(
      [&] {
        for (int i = 0; i < 100; ++i) loader.next();
      },
      {bad, "/tokens[3000]", "999"});
  // The error stays until the loader is moved elsewhere.
  expect_error([&] { loader.next(); }, {"/tokens[3000]"});
}

TEST_F(LoaderTest, RejectsImpossibleOptions) {
  expect_error([&] { Loader(path_, options(0, 0, 1, 2)); }, {"batch size"});
  expect_error([&] { Loader(path_, options(2, 2, 2, 2)); }, {"rank 2", "world size 2"});
  LoaderOptions o = options(2, 0, 1, 2);
  o.T = kTokens;
  expect_error([&] { Loader(path_, o); }, {path_, "tokens", "sequence length"});
  expect_error([&] { Loader(dir_.file("none.h5"), options(2, 0, 1, 2)); }, {"does not exist"});
}

}  // namespace
}  // namespace infllm::data
