// ZeRO-1. CPU: every rank's pieces of a reduce_scatter layout cover each parameter element
// exactly once and point at consistent places in the bucket buffers and the optimizer state;
// AdamW's optimizer memory. Multi-GPU (skips without 2 GPUs): on two ranks, ZeroAdamW over 5
// steps equals a plain AdamW on the same averaged gradients (masters, moments, weights, grad
// norm), its gathered state() has AdamW's layout and loads into a plain AdamW and back, its
// optimizer memory halves, and with a real bf16 TransformerLM the reduce-scattered (overlapped)
// gradients equal one process's big-batch gradient.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "core/error.h"
#include "core/ops.h"
#include "distributed/launch_env.h"
#include "distributed/zero_optimizer.h"
#include "layers/transformer.h"
#include "optim/adamw.h"
#include "tests/distributed/rank_scenario.h"
#include "tests/test_util.h"

namespace infllm::distributed {
namespace {

TEST(PlanZeroState, RanksCoverEveryParameterElementExactlyOnce) {
  std::mt19937_64 rng(std::random_device{}());
  for (int trial = 0; trial < 30; ++trial) {
    std::vector<size_t> sizes(1 + rng() % 30);
    for (size_t& n : sizes) n = 1 + rng() % (rng() % 5 == 0 ? 40000 : 700);
    const int world = 1 + int(rng() % 5);
    const GradientLayout layout =
        plan_gradient_layout(sizes, 512 + rng() % 60000, GradientReduction::reduce_scatter, world);
    std::vector<std::vector<int>> covered(sizes.size());
    for (size_t p = 0; p < sizes.size(); ++p) covered[p].assign(sizes[p], 0);
    for (int rank = 0; rank < world; ++rank) {
      const ZeroStatePlan plan = plan_zero_state(layout, rank);
      size_t elements = 0;
      for (size_t b = 0; b < layout.buckets.size(); ++b) {
        EXPECT_EQ(plan.bucket_offsets[b], elements);
        elements += layout.buckets[b].shards.shard_elements;
      }
      EXPECT_EQ(plan.elements, elements);
      std::vector<int> state_used(plan.elements, 0);
      for (const ZeroPiece& piece : plan.pieces) {
        ASSERT_LT(piece.param, sizes.size());
        ASSERT_LT(piece.begin, piece.end);
        ASSERT_LE(piece.end, sizes[piece.param]);
        EXPECT_EQ(piece.bucket, layout.bucket_of[piece.param]);
        // The piece's gradient sits where the parameter's grad view puts those elements...
        EXPECT_EQ(piece.bucket_offset, layout.offset_of[piece.param] + piece.begin);
        // ...inside this rank's shard of the bucket, and the state mirrors the shard.
        const ZeroShardPlan& shards = layout.buckets[piece.bucket].shards;
        ASSERT_GE(piece.bucket_offset, shards.shard_begin(rank));
        EXPECT_LE(piece.bucket_offset + (piece.end - piece.begin),
                  shards.shard_begin(rank) + shards.shard_elements);
        EXPECT_EQ(piece.state_offset, plan.bucket_offsets[piece.bucket] + piece.bucket_offset -
                                          shards.shard_begin(rank));
        for (size_t e = piece.begin; e < piece.end; ++e) ++covered[piece.param][e];
        for (size_t i = 0; i < piece.end - piece.begin; ++i)
          ++state_used.at(piece.state_offset + i);
      }
      for (int used : state_used) EXPECT_LE(used, 1) << "two pieces share optimizer state";
    }
    for (size_t p = 0; p < sizes.size(); ++p)
      for (size_t e = 0; e < sizes[p]; ++e)
        ASSERT_EQ(covered[p][e], 1) << "parameter " << p << " element " << e << " world " << world;
  }
}

TEST(PlanZeroState, BadArgumentsAreClearErrors) {
  const GradientLayout all_reduce =
      plan_gradient_layout({10, 20}, 1024, GradientReduction::all_reduce, 2);
  EXPECT_THROW(plan_zero_state(all_reduce, 0), Error);
  const GradientLayout scatter =
      plan_gradient_layout({10, 20}, 1024, GradientReduction::reduce_scatter, 2);
  EXPECT_THROW(plan_zero_state(scatter, 2), Error);
  EXPECT_THROW(plan_zero_state(scatter, -1), Error);
}

TEST(OptimizerBytes, PlainAdamWCountsMomentsAndSeparateMasters) {
  std::vector<Tensor> tensors = {ops::normal({7, 5}, 1, 0, 0.0, 1.0, DType::f32),
                                 ops::cast(ops::normal({33}, 2, 0, 0.0, 1.0), DType::bf16)};
  for (Tensor& t : tensors) t.set_requires_grad(true);
  AdamW adamw({{"w", &tensors[0]}, {"b", &tensors[1]}}, AdamWOptions{});
  // f32: the parameter is its own master (moments only); bf16: an f32 master too.
  EXPECT_EQ(adamw.state_bytes(), 35u * 4 * 2 + 33u * 4 * 3);
}

TEST(ZeroAdamWMultiGpu, TwoRanksMatchPlainAdamW) {
  if (cuda_device_count() < 2)
    GTEST_SKIP() << "needs 2 GPUs, this machine has " << cuda_device_count();
  std::string report;
  EXPECT_EQ(testing::run_rank_scenario("ZeroAdamWRank.Scenario", "zero", 2, &report), 0) << report;
}

using infllm::testing::as_f64;
using infllm::testing::rel_error;

struct ParamSpec {
  std::string name;
  Shape shape;
};

// Odd sizes so shards cut parameters mid-way; "norm" and "embedding" fall in AdamW's no-decay
// group, so pieces of both kinds share buckets.
const std::vector<ParamSpec> kSpecs = {
    {"embedding.weight", {67, 24}},     {"blocks.0.attn_norm.weight", {24}},
    {"blocks.0.wqkv.weight", {72, 24}}, {"blocks.0.mlp.w1.weight", {53, 24}},
    {"blocks.0.mlp_norm.weight", {24}}, {"blocks.0.mlp.w2.weight", {24, 53}},
    {"final_norm.weight", {24}},        {"head.weight", {67, 24}},
};

// Parameter slots of a stand-in model (fixed addresses, as a Module's are).
struct Params {
  std::vector<Tensor> tensors;
  Params(uint64_t seed, Device device) {
    tensors.reserve(kSpecs.size());
    for (size_t i = 0; i < kSpecs.size(); ++i) {
      tensors.push_back(ops::normal(kSpecs[i].shape, seed, i << 32, 0.0, 0.5, DType::bf16, device));
      tensors.back().set_requires_grad(true);
    }
  }
  std::vector<NamedParameter> named() {
    std::vector<NamedParameter> out;
    for (size_t i = 0; i < tensors.size(); ++i) out.emplace_back(kSpecs[i].name, &tensors[i]);
    return out;
  }
};

std::map<std::string, Tensor> to_host_map(
    const std::vector<std::pair<std::string, Tensor>>& state) {
  std::map<std::string, Tensor> out;
  for (const auto& [key, value] : state) out[key] = value.to(Device::cpu());
  return out;
}

void expect_same_state(const std::vector<std::pair<std::string, Tensor>>& out,
                       const std::vector<std::pair<std::string, Tensor>>& ref, double tolerance) {
  ASSERT_EQ(out.size(), ref.size());
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].first, ref[i].first) << "state order";
    EXPECT_EQ(out[i].second.shape(), ref[i].second.shape()) << out[i].first;
    EXPECT_LE(rel_error(out[i].second, as_f64(ref[i].second)), tolerance) << out[i].first;
  }
}

// ZeroAdamW and a plain AdamW (after an all-reduce of the same gradients) side by side.
void run_against_adamw(ProcessGroup& pg, uint64_t seed) {
  const Device device = Device::cuda(pg.device());
  AdamWOptions options;
  options.lr = 1e-2;
  options.weight_decay = 0.1;
  Params zero_params(seed, device), ref_params(seed, device);
  DataParallel zero_ddp(pg, zero_params.named(), 8192, GradientReduction::reduce_scatter);
  DataParallel ref_ddp(pg, ref_params.named(), 8192, GradientReduction::all_reduce);
  ASSERT_GE(zero_ddp.layout().buckets.size(), 3u);
  EXPECT_THROW({ ZeroAdamW wrong(ref_ddp, options); }, Error) << "ZeRO needs reduce_scatter";
  ZeroAdamW zero(zero_ddp, options);
  AdamW ref(ref_params.named(), options);

  // Optimizer memory: each rank holds its shard of 12 bytes per element.
  size_t padded = 0, total = 0;
  for (const BucketLayout& bucket : zero_ddp.layout().buckets) padded += bucket.elements;
  for (const Tensor& t : ref_params.tensors) total += size_t(t.numel());
  EXPECT_EQ(ref.state_bytes(), 12 * total);
  EXPECT_EQ(zero.state_bytes() * size_t(pg.world_size()), 12 * padded);
  EXPECT_LT(padded - total, zero_ddp.layout().buckets.size() * size_t(pg.world_size()) * 16);
  std::printf("rank %d: optimizer bytes %zu with ZeRO, %zu without\n", pg.rank(),
              zero.state_bytes(), ref.state_bytes());

  for (int step = 0; step < 5; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    zero_ddp.prepare_backward(true);
    ref_ddp.prepare_backward(true);
    // This rank's gradients (different per rank and step) into both models' grad views.
    for (size_t p = 0; p < kSpecs.size(); ++p) {
      const uint64_t stream = (uint64_t(step) * 64 + uint64_t(pg.rank())) * 64 + p;
      const Tensor grad =
          ops::normal(kSpecs[p].shape, seed + 1, stream << 32, 0.0, 1.0, DType::f32, device);
      Tensor zero_grad = zero_params.tensors[p].grad(), ref_grad = ref_params.tensors[p].grad();
      copy_into(grad, zero_grad);
      copy_into(grad, ref_grad);
    }
    zero_ddp.finish_backward();
    ref_ddp.finish_backward();
    const double norm = zero.grad_norm(), ref_norm = ref.grad_norm();
    EXPECT_NEAR(norm, ref_norm, 1e-5 * ref_norm);
    const double scale = step % 2 == 0 ? 0.5 / ref_norm : 1.0;  // clipped and unclipped steps
    zero.step(1e-2, scale);
    ref.step(1e-2, scale);
    for (size_t p = 0; p < kSpecs.size(); ++p)
      EXPECT_LT(rel_error(zero_params.tensors[p], as_f64(ref_params.tensors[p])), 1e-2)
          << kSpecs[p].name;
  }
  EXPECT_EQ(zero.steps_taken(), 5);
  EXPECT_TRUE(zero_ddp.parameters_identical());
  const auto zero_state = zero.state();
  expect_same_state(zero_state, ref.state(), 1e-5);

  // Round trip: a saved state loads back exactly (after another step moved everything).
  const std::map<std::string, Tensor> saved = to_host_map(zero_state);
  zero_ddp.prepare_backward(true);
  zero_ddp.finish_backward();
  zero.step(1e-2);
  zero.load_state(saved);
  expect_same_state(zero.state(), ref.state(), 1e-5);
  for (size_t p = 0; p < kSpecs.size(); ++p)
    EXPECT_EQ(as_f64(zero_params.tensors[p]),
              as_f64(ops::cast(saved.at("master/" + kSpecs[p].name).to(device), DType::bf16)))
        << "load_state writes the compute copy";

  // The gathered layout is AdamW's: it loads into a single-process AdamW, and AdamW's state
  // loads into ZeroAdamW.
  Params single_params(seed + 7, device);
  AdamW single(single_params.named(), options);
  single.load_state(saved);
  expect_same_state(single.state(), zero_state, 0.0);
  zero.load_state(to_host_map(ref.state()));
  expect_same_state(zero.state(), ref.state(), 0.0);

  // set_master: one parameter's masters and compute copy; moments untouched.
  const Tensor values = ops::normal(kSpecs[2].shape, seed + 2, 0, 0.0, 1.0, DType::f32, device);
  zero.set_master(kSpecs[2].name, values);
  const auto after = zero.state();
  EXPECT_EQ(rel_error(after[6].second, as_f64(values)), 0.0) << after[6].first;
  EXPECT_EQ(as_f64(zero_params.tensors[2]), as_f64(ops::cast(values, DType::bf16)));

  std::map<std::string, Tensor> missing = saved;
  missing.erase("exp_avg/" + kSpecs[3].name);
  EXPECT_THROW(zero.load_state(missing), Error);
  expect_same_state(zero.state(), after, 0.0);  // a rejected checkpoint changes nothing
  EXPECT_THROW(zero.set_master("no.such.weight", values), Error);
}

// Real backward through DataParallel(reduce_scatter): this rank's shard of the averaged
// gradient equals the matching slice of one process's gradient of the whole batch.
void run_transformer(ProcessGroup& pg, uint64_t seed) {
  const Device device = Device::cuda(pg.device());
  const int64_t T = 32, per_rank = 4, accum = 2, micro = per_rank / accum;
  const int64_t rows = per_rank * pg.world_size();
  TransformerLM model(testing::small_gpu_model(), seed, device, DType::bf16);
  TransformerLM reference(testing::small_gpu_model(), seed, device, DType::bf16);
  std::vector<NamedParameter> params = model.named_parameters();
  DataParallel ddp(pg, params, 64 << 10, GradientReduction::reduce_scatter);
  ddp.broadcast_parameters();
  ZeroAdamW zero(ddp, AdamWOptions{});

  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(rows * T), targets(rows * T);
  for (int32_t& t : tokens) t = int32_t(rng() % 96);
  for (int32_t& t : targets) t = int32_t(rng() % 96);
  auto rows_of = [&](const std::vector<int32_t>& all, int64_t first, int64_t count) {
    std::vector<int32_t> part(all.begin() + first * T, all.begin() + (first + count) * T);
    return Tensor::from_vector<int32_t>(part, {count, T}, device);
  };
  backward(reference.loss(rows_of(tokens, 0, rows), rows_of(targets, 0, rows), rows * T));
  std::vector<std::vector<double>> ref_grads;
  for (auto& [name, param] : reference.named_parameters())
    ref_grads.push_back(as_f64(param->grad()));

  for (int step = 0; step < 2; ++step) {
    for (int64_t m = 0; m < accum; ++m) {
      ddp.prepare_backward(m == accum - 1);
      const int64_t first = pg.rank() * per_rank + m * micro;
      Tensor loss =
          model.loss(rows_of(tokens, first, micro), rows_of(targets, first, micro), micro * T);
      backward(mul(loss, 1.0 / double(accum)));
      ddp.finish_backward();
    }
    if (step == 1) {
      EXPECT_GT(ddp.buckets_overlapped(), 0u) << "no reduce-scatter overlapped";
    }
    // Compare, per parameter, the pieces this rank owns.
    std::vector<std::vector<double>> buckets;
    for (size_t b = 0; b < ddp.layout().buckets.size(); ++b)
      buckets.push_back(as_f64(ddp.bucket_buffer(b)));
    std::vector<std::vector<double>> out(params.size()), ref(params.size());
    for (const ZeroPiece& piece : zero.plan().pieces) {
      for (size_t i = 0; i < piece.end - piece.begin; ++i) {
        out[piece.param].push_back(buckets[piece.bucket][piece.bucket_offset + i]);
        ref[piece.param].push_back(ref_grads[piece.param][piece.begin + i]);
      }
    }
    for (size_t p = 0; p < params.size(); ++p)
      if (!ref[p].empty()) {
        EXPECT_LT(rel_error(out[p], ref[p]), 1e-2) << params[p].first << " step " << step;
      }
  }
  const double norm = zero.grad_norm();
  EXPECT_TRUE(std::isfinite(norm) && norm > 0) << norm;
  zero.step(1e-3, std::min(1.0, 1.0 / norm));
  EXPECT_TRUE(ddp.parameters_identical()) << "the all-gather must leave every rank equal";
}

TEST(ZeroAdamWRank, Scenario) {
  const std::string scenario = testing::rank_scenario();
  if (scenario.empty()) GTEST_SKIP() << "runs only as a rank started by ZeroAdamWMultiGpu";
  ASSERT_EQ(scenario, "zero");
  ProcessGroupOptions options;
  options.timeout = std::chrono::seconds(120);
  ProcessGroup pg(detect_launch_env(process_env_reader()), options);
  const uint64_t seed = testing::rank_seed();
  run_against_adamw(pg, seed);
  run_transformer(pg, seed);
}

}  // namespace
}  // namespace infllm::distributed
