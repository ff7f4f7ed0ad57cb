// Data parallelism. CPU: the bucket layouts of both reductions (cover, order, alignment,
// padding) and the readiness logic that decides when a bucket's collective may start (learned
// counts, tied and unused parameters, in-order release, graph changes). Multi-GPU (skips
// without 2 GPUs): two ranks started by launch_local train a real bf16 TransformerLM; their
// averaged gradients with gradient accumulation equal one process's gradient of the whole
// batch, the overlapped path equals the first (non-overlapped) step, broadcast makes differently
// initialized ranks identical, and an AdamW step keeps them identical.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "core/device.h"
#include "core/error.h"
#include "distributed/data_parallel.h"
#include "distributed/launch_env.h"
#include "layers/transformer.h"
#include "optim/adamw.h"
#include "tests/distributed/rank_scenario.h"
#include "tests/test_util.h"

namespace infllm::distributed {
namespace {

std::vector<size_t> random_model(std::mt19937_64& rng, size_t count) {
  std::vector<size_t> sizes(count);
  for (size_t& n : sizes) n = rng() % 8 == 0 ? 20000 + rng() % 50000 : 1 + rng() % 3000;
  return sizes;
}

TEST(PlanGradientLayout, EveryParameterOnceInsideItsBucket) {
  std::mt19937_64 rng(std::random_device{}());
  for (int trial = 0; trial < 50; ++trial) {
    const std::vector<size_t> sizes = random_model(rng, 1 + rng() % 40);
    const size_t bucket_bytes = 1024 + rng() % 100000;
    const int world = 1 + int(rng() % 4);
    for (GradientReduction reduction :
         {GradientReduction::all_reduce, GradientReduction::reduce_scatter}) {
      const bool scatter = reduction == GradientReduction::reduce_scatter;
      const GradientLayout layout = plan_gradient_layout(sizes, bucket_bytes, reduction, world);
      std::vector<size_t> order;  // all parameters, bucket by bucket
      for (size_t b = 0; b < layout.buckets.size(); ++b) {
        const BucketLayout& bucket = layout.buckets[b];
        ASSERT_EQ(bucket.params.size(), bucket.offsets.size());
        size_t end = 0, payload = 0;
        for (size_t i = 0; i < bucket.params.size(); ++i) {
          const size_t p = bucket.params[i];
          order.push_back(p);
          EXPECT_EQ(layout.bucket_of[p], b);
          EXPECT_EQ(layout.offset_of[p], bucket.offsets[i]);
          EXPECT_GE(bucket.offsets[i], end) << "parameters overlap";
          if (scatter) {
            EXPECT_EQ(bucket.offsets[i], end) << "reduce_scatter packs parameters";
          }
          if (!scatter) {
            EXPECT_EQ(bucket.offsets[i] * sizeof(float) % 256, 0u);
          }
          end = bucket.offsets[i] + sizes[p];
          payload += sizes[p];
        }
        EXPECT_LE(end, bucket.elements);
        if (bucket.params.size() > 1) {
          EXPECT_LE(payload * sizeof(float), bucket_bytes);
        }
        if (scatter) {
          EXPECT_EQ(bucket.elements % (size_t(world) * 16), 0u);
          EXPECT_LT(bucket.elements - payload, size_t(world) * 16);
          EXPECT_EQ(bucket.shards.world_size, world);
          EXPECT_EQ(bucket.shards.param_offsets, bucket.offsets);
          EXPECT_EQ(bucket.shards.padded_elements(), bucket.elements);
        } else {
          EXPECT_EQ(bucket.elements, end);
        }
      }
      // Last parameter first, each exactly once: the order backward produces gradients.
      ASSERT_EQ(order.size(), sizes.size());
      for (size_t i = 0; i < order.size(); ++i) EXPECT_EQ(order[i], sizes.size() - 1 - i);
    }
  }
}

TEST(PlanGradientLayout, BadArgumentsAreClearErrors) {
  EXPECT_THROW(plan_gradient_layout({4, 5}, 0, GradientReduction::all_reduce, 2), Error);
  EXPECT_THROW(plan_gradient_layout({4, 5}, 64, GradientReduction::reduce_scatter, 0), Error);
}

// Drives a readiness tracker through one synced backward whose gradient callbacks arrive in
// `order`; returns, per bucket, the callback index at which it was released (order.size() for
// finish()), and checks buckets come out in ascending order.
std::vector<size_t> release_times(BucketReadiness& readiness, const std::vector<size_t>& order,
                                  size_t buckets) {
  std::vector<size_t> released_at(buckets, SIZE_MAX);
  size_t next = 0;
  auto take = [&](const std::vector<size_t>& released, size_t when) {
    for (size_t b : released) {
      EXPECT_EQ(b, next++) << "buckets must be released in order";
      if (b < buckets) released_at[b] = when;
    }
  };
  readiness.begin();
  for (size_t i = 0; i < order.size(); ++i) take(readiness.grad_accumulated(order[i]), i);
  take(readiness.finish(), order.size());
  EXPECT_EQ(next, buckets) << "every bucket must be released exactly once";
  return released_at;
}

// Independent expectation: a bucket is complete at the last callback of its parameters (before
// any callback if none of them gets one) and is released once it and all earlier ones are.
std::vector<size_t> expected_release_times(const GradientLayout& layout,
                                           const std::vector<size_t>& order) {
  std::vector<size_t> released_at;
  size_t release = 0;
  for (const BucketLayout& bucket : layout.buckets) {
    size_t complete = 0;
    for (size_t i = 0; i < order.size(); ++i)
      if (std::find(bucket.params.begin(), bucket.params.end(), order[i]) != bucket.params.end())
        complete = i;
    release = std::max(release, complete);
    released_at.push_back(release);
  }
  return released_at;
}

struct ReadinessCase {
  std::vector<size_t> sizes;
  GradientLayout layout;
  std::vector<std::string> names;
  explicit ReadinessCase(std::mt19937_64& rng) {
    for (int i = 0; i < 14; ++i) sizes.push_back(1000 + rng() % 2000);
    layout = plan_gradient_layout(sizes, 4 * 4000, GradientReduction::all_reduce, 1);
    for (size_t i = 0; i < sizes.size(); ++i) names.push_back("layer" + std::to_string(i));
  }
  // Backward order of a tied LM: parameter 0 (the tied embedding) first through the head, then
  // the rest last to first, parameter 0 again at the end; `unused` gets no gradient.
  std::vector<size_t> tied_order(size_t unused) const {
    std::vector<size_t> order = {0};
    for (size_t p = sizes.size(); p-- > 1;)
      if (p != unused) order.push_back(p);
    order.push_back(0);
    return order;
  }
};

TEST(BucketReadiness, LearnsCountsThenReleasesEachBucketWhenComplete) {
  std::mt19937_64 rng(std::random_device{}());
  ReadinessCase c(rng);
  ASSERT_GE(c.layout.buckets.size(), 4u);
  const size_t buckets = c.layout.buckets.size();
  BucketReadiness readiness(c.layout, c.names);
  const std::vector<size_t> order = c.tied_order(5);
  // Learning: nothing is released before the end.
  EXPECT_EQ(release_times(readiness, order, buckets), std::vector<size_t>(buckets, order.size()));
  EXPECT_EQ(readiness.released_during_backward(), 0u);
  EXPECT_TRUE(readiness.learned());
  for (int step = 0; step < 3; ++step) {
    EXPECT_EQ(release_times(readiness, order, buckets), expected_release_times(c.layout, order));
    // The bucket of the tied parameter completes with the very last callback, still inside
    // backward: every bucket overlaps.
    EXPECT_EQ(readiness.released_during_backward(), buckets);
  }
}

TEST(BucketReadiness, AnEarlyCompleteBucketWaitsForTheOnesBeforeIt) {
  std::mt19937_64 rng(std::random_device{}());
  ReadinessCase c(rng);
  const size_t buckets = c.layout.buckets.size();
  BucketReadiness readiness(c.layout, c.names);
  std::vector<size_t> order(c.sizes.size());
  for (size_t p = 0; p < order.size(); ++p) order[p] = p;  // first parameter first: bucket 0 last
  release_times(readiness, order, buckets);
  const std::vector<size_t> released = release_times(readiness, order, buckets);
  EXPECT_EQ(released, expected_release_times(c.layout, order));
  EXPECT_EQ(released, std::vector<size_t>(buckets, order.size() - 1));
}

TEST(BucketReadiness, AGradientAfterItsBucketWasReleasedIsAnError) {
  std::mt19937_64 rng(std::random_device{}());
  ReadinessCase c(rng);
  const size_t buckets = c.layout.buckets.size();
  const size_t last = c.sizes.size() - 1;  // in bucket 0, released first
  BucketReadiness readiness(c.layout, c.names);
  std::vector<size_t> order = c.tied_order(SIZE_MAX);
  release_times(readiness, order, buckets);
  std::vector<size_t> changed = order;
  changed.push_back(last);  // the graph now uses the last parameter twice
  readiness.begin();
  std::string message;
  try {
    for (size_t p : changed) readiness.grad_accumulated(p);
  } catch (const Error& error) {
    message = error.what();
  }
  EXPECT_NE(message.find("'layer" + std::to_string(last) + "'"), std::string::npos) << message;
  EXPECT_NE(message.find("relearn_gradient_counts"), std::string::npos) << message;
  // After forget() the new graph is learned, then overlapped again.
  readiness.forget();
  EXPECT_EQ(release_times(readiness, changed, buckets),
            std::vector<size_t>(buckets, changed.size()));
  EXPECT_EQ(release_times(readiness, changed, buckets), expected_release_times(c.layout, changed));
}

TEST(BucketReadiness, FewerGradientsThanLearnedAreReducedAtTheEndAndRelearned) {
  std::mt19937_64 rng(std::random_device{}());
  ReadinessCase c(rng);
  const size_t buckets = c.layout.buckets.size();
  BucketReadiness readiness(c.layout, c.names);
  const std::vector<size_t> full = c.tied_order(SIZE_MAX);
  release_times(readiness, full, buckets);
  const size_t skipped = c.layout.buckets[1].params.front();
  const std::vector<size_t> fewer = c.tied_order(skipped);
  const std::vector<size_t> released = release_times(readiness, fewer, buckets);
  EXPECT_LT(released[0], fewer.size()) << "bucket 0 is complete during backward";
  for (size_t b = 1; b < buckets; ++b) EXPECT_EQ(released[b], fewer.size()) << "bucket " << b;
  EXPECT_EQ(release_times(readiness, fewer, buckets), expected_release_times(c.layout, fewer));
}

// Without a GPU (a CPU-only build, or no device visible) the process group a DataParallel needs
// cannot be built: a clear error naming it, not a hang or a crash.
TEST(ProcessGroup, WithoutAGpuConstructionIsAClearError) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present";
  infllm::testing::expect_error([] { ProcessGroup pg(LaunchEnv{}, ProcessGroupOptions{}); },
                                {"CUDA"});
}

TEST(DataParallelMultiGpu, TwoRanksAverageGradientsLikeOneBigBatch) {
  if (cuda_device_count() < 2)
    GTEST_SKIP() << "needs 2 GPUs, this machine has " << cuda_device_count();
  std::string report;
  EXPECT_EQ(testing::run_rank_scenario("DataParallelRank.Scenario", "ddp", 2, &report), 0)
      << report;
}

// The two-rank scenario: each rank is this binary, started by the test above.

ModelConfig small_config(bool checkpointing) {
  ModelConfig config = testing::small_gpu_model();
  config.tie_embeddings = true;  // the embedding gets two gradients per backward
  config.activation_checkpointing = checkpointing;
  return config;
}

// The global batch, the same on every rank: random tokens and targets, i32 [rows, T].
struct GlobalBatch {
  int64_t rows, T;
  std::vector<int32_t> tokens, targets;
  GlobalBatch(uint64_t seed, int64_t rows_, int64_t T_, int64_t vocab) : rows(rows_), T(T_) {
    std::mt19937_64 rng(seed);
    for (int64_t i = 0; i < rows * T; ++i) {
      tokens.push_back(int32_t(rng() % vocab));
      targets.push_back(int32_t(rng() % vocab));
    }
  }
  Tensor slice(const std::vector<int32_t>& all, int64_t first, int64_t count, Device device) const {
    std::vector<int32_t> part(all.begin() + first * T, all.begin() + (first + count) * T);
    return Tensor::from_vector<int32_t>(part, {count, T}, device);
  }
};

void run_ddp(const LaunchEnv& env, uint64_t seed) {
  ProcessGroupOptions options;
  options.timeout = std::chrono::seconds(120);
  ProcessGroup pg(env, options);
  const Device device = Device::cuda(pg.device());
  const int64_t T = 32, per_rank = 4, accum = 2, micro = per_rank / accum;
  const int64_t rows = per_rank * env.world_size;
  for (bool checkpointing : {false, true}) {
    SCOPED_TRACE("activation_checkpointing=" + std::to_string(checkpointing));
    const ModelConfig config = small_config(checkpointing);
    TransformerLM model(config, seed + uint64_t(env.rank), device, DType::bf16);  // ranks differ
    std::vector<NamedParameter> params = model.named_parameters();
    DataParallel ddp(pg, params, 64 << 10);
    ASSERT_GE(ddp.layout().buckets.size(), 3u);
    EXPECT_FALSE(ddp.parameters_identical());
    ddp.broadcast_parameters();
    EXPECT_TRUE(ddp.parameters_identical());

    // One process, the whole global batch, rank 0's initial weights.
    TransformerLM reference(config, seed, device, DType::bf16);
    std::vector<NamedParameter> ref_params = reference.named_parameters();
    const GlobalBatch batch(seed, rows, T, config.vocab_size);
    backward(reference.loss(batch.slice(batch.tokens, 0, rows, device),
                            batch.slice(batch.targets, 0, rows, device), rows * T));
    std::vector<std::vector<double>> ref_grads;
    for (size_t p = 0; p < params.size(); ++p) {
      EXPECT_EQ(infllm::testing::as_f64(*params[p].second),
                infllm::testing::as_f64(*ref_params[p].second))
          << "after broadcast, " << params[p].first << " must be rank 0's";
      ref_grads.push_back(infllm::testing::as_f64(ref_params[p].second->grad()));
    }

    // Two identical steps (no update between): the first learns the gradient counts and
    // reduces at the end, the second overlaps; both equal the big-batch gradient.
    std::vector<std::vector<double>> first_step;
    for (int step = 0; step < 2; ++step) {
      for (int64_t m = 0; m < accum; ++m) {
        ddp.prepare_backward(m == accum - 1);
        const int64_t first = env.rank * per_rank + m * micro;
        Tensor loss = model.loss(batch.slice(batch.tokens, first, micro, device),
                                 batch.slice(batch.targets, first, micro, device), micro * T);
        backward(mul(loss, 1.0 / double(accum)));
        ddp.finish_backward();
      }
      if (step == 0) {
        EXPECT_EQ(ddp.buckets_overlapped(), 0u);
      }
      if (step == 1) {
        EXPECT_GT(ddp.buckets_overlapped(), 0u) << "no bucket overlapped backward";
      }
      const double exposed = ddp.last_exposed_ms();
      EXPECT_TRUE(std::isfinite(exposed) && exposed >= 0.0) << exposed;
      std::printf("rank %d step %d: %zu of %zu buckets overlapped, exposed %.3f ms\n", env.rank,
                  step, ddp.buckets_overlapped(), ddp.layout().buckets.size(), exposed);
      for (size_t p = 0; p < params.size(); ++p) {
        const std::vector<double> grad = infllm::testing::as_f64(params[p].second->grad());
        EXPECT_LT(infllm::testing::rel_error(grad, ref_grads[p]), 1e-2)
            << params[p].first << " step " << step;
        if (step == 0) first_step.push_back(grad);
        if (step == 1) {
          EXPECT_LT(infllm::testing::rel_error(grad, first_step[p]), 1e-5)
              << params[p].first << ": the overlapped step differs from the first";
        }
      }
    }
    AdamW optimizer(params, AdamWOptions{});
    optimizer.step(1e-3);
    EXPECT_TRUE(ddp.parameters_identical()) << "a step on averaged gradients keeps ranks equal";
  }
}

TEST(DataParallelRank, Scenario) {
  const std::string scenario = testing::rank_scenario();
  if (scenario.empty()) GTEST_SKIP() << "runs only as a rank started by DataParallelMultiGpu";
  const LaunchEnv env = detect_launch_env(process_env_reader());
  ASSERT_EQ(scenario, "ddp");
  run_ddp(env, testing::rank_seed());
}

}  // namespace
}  // namespace infllm::distributed
