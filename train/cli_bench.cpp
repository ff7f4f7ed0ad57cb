// infllm bench RECIPE [key.sub=value ...] [--steps N] [--warmup W]: times full training steps
// (forward, backward, optimizer) and prints one JSON line, comparable with torch_peer.py train.
// With --attention-only it times one layer's attention core instead (train/attention_bench.h).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "core/cuda/allocator.h"
#include "core/cuda/stream.h"
#include "core/device.h"
#include "train/attention_bench.h"
#include "train/cli_args.h"
#include "train/commands.h"
#include "train/memory_estimate.h"
#include "train/metrics_log.h"
#include "train/replicas.h"
#include "train/run_setup.h"
#include "train/train_step.h"

namespace infllm::train {
namespace {

constexpr const char* kHelp =
    R"(usage: infllm bench RECIPE [section.key=value ...] [--steps N] [--warmup W] [--nproc N]
                             [--attention-only]

Times training steps of a recipe (data.train: random gives synthetic tokens) and prints JSON:
median step time, tokens/s (all ranks together), MFU per GPU and peak device memory.
  --steps N         timed steps (default 10)
  --warmup W        untimed steps first (default 3)
  --nproc N         data parallel over N local GPUs (the recipe's distributed section applies)
  --attention-only  time one layer's attention core alone instead, on random inputs of the
                    recipe's shape (data.batch_size x data.seq_len, the model's heads): the path
                    its attention options take at that length (dense, infllm_v2 = selection +
                    sparse attention, nsa = every branch and the gates), forward and forward +
                    backward, medians of --steps repetitions
)";

int bench_attention_only(const Recipe& recipe, const std::string& name, int64_t steps,
                         int64_t warmup) {
  const Device device = choose_device(recipe);
  if (device.is_cuda()) cuda::set_device(device.index);
  const AttentionBenchResult r =
      bench_attention_core(recipe.model, recipe.data.batch_size, recipe.data.seq_len, device,
                           compute_dtype(recipe, device), steps, warmup, recipe.train.seed);
  std::printf(
      "{\"bench\": \"infllm_attention_core\", \"recipe\": %s, \"device\": %s, \"path\": \"%s\", "
      "\"B\": %lld, \"T\": %lld, \"Hq\": %lld, \"Hkv\": %lld, \"D\": %lld, \"layers\": %lld, "
      "\"steps\": %lld, \"forward_ms\": %.3f, \"forward_backward_ms\": %.3f}\n",
      json_string(name).c_str(), json_string(device.str()).c_str(), r.path.c_str(), (long long)r.B,
      (long long)r.T, (long long)r.Hq, (long long)r.Hkv, (long long)r.D,
      (long long)recipe.model.n_layers, (long long)steps, r.forward_ms, r.forward_backward_ms);
  return 0;
}

}  // namespace

int bench_command(int argc, char** argv) {
  CliArgs args =
      parse_cli("bench", argc, argv, {"--steps", "--warmup", "--nproc"}, {"--attention-only"});
  if (args.has("--help") || args.positionals.empty()) {
    std::fputs(kHelp, args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  const bool attention_only = args.has("--attention-only");
  if (int64_t nproc = args.get_int("--nproc", 0, {1, kMaxLocalRanks}); nproc > 0) {
    INFLLM_CHECK(!attention_only, "--attention-only times one layer on one device; drop --nproc");
    return launch_local_ranks("bench", argc, argv, int(nproc));
  }
  std::vector<std::string> overrides(args.positionals.begin() + 1, args.positionals.end());
  Recipe recipe = load_recipe(args.positionals[0], overrides);
  int64_t steps = args.get_int("--steps", 10, {1}), warmup = args.get_int("--warmup", 3, {0});
  if (attention_only) return bench_attention_only(recipe, args.positionals[0], steps, warmup);
  recipe.train.steps = std::max<int64_t>(recipe.train.steps, steps + warmup);
  Replicas replicas(recipe);
  Device device = replicas.device();
  // A recipe that cannot fit fails here, naming the keys, before the model is allocated.
  check_memory(estimate_memory(recipe, device.is_cuda(), replicas.world_size()),
               available_host_bytes(), double(device_memory(device).free_bytes), device.str());
  TransformerLM model(recipe.model, recipe.train.seed, device, compute_dtype(recipe, device));
  std::unique_ptr<Optimizer> optimizer = replicas.make_optimizer(model, recipe.optim);
  BatchSource batches(recipe, device, replicas.rank(), replicas.world_size());
  std::vector<double> times, exposed;
  for (int64_t step = 0; step < warmup + steps; ++step) {
    auto start = std::chrono::steady_clock::now();
    train_step(model, *optimizer, batches, recipe, step, replicas);  // ends in a host sync
    double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (step < warmup) continue;
    times.push_back(ms);
    exposed.push_back(replicas.exposed_communication_ms());
  }
  std::sort(times.begin(), times.end());
  std::sort(exposed.begin(), exposed.end());
  double median_ms = times[times.size() / 2];
  if (!replicas.writer()) return 0;
  const int world = replicas.world_size();
  double tokens =
      double(recipe.data.batch_size) * recipe.data.seq_len * recipe.data.grad_accum * world;
  double tokens_per_s = tokens / (median_ms / 1e3);
  double peak = peak_flops(device);
  double memory_gb = 0;
  if (device.is_cuda()) memory_gb = double(cuda::memory_stats(device.index).peak) / 1e9;
  const char* checkpointing = !recipe.model.activation_checkpointing ? "off"
                              : recipe.model.recompute_attention     ? "whole blocks"
                                                                     : "keeps attention";
  std::printf(
      "{\"bench\": \"infllm_train_step\", \"recipe\": \"%s\", \"device\": \"%s\", "
      "\"params_M\": %.1f, \"B\": %d, \"T\": %d, \"attention\": \"%s\", "
      "\"checkpointing\": \"%s\", "
      "\"gpus\": %d, \"optimizer\": \"%s\", \"step_ms\": %.2f, \"tokens_per_s\": %.0f, "
      "\"mfu_989\": %.3f, \"peak_mem_GB\": %.2f, \"optimizer_state_GB\": %.3f, "
      "\"comm_exposed_ms\": %.2f}\n",
      args.positionals[0].c_str(), device.str().c_str(), double(model.num_parameters()) / 1e6,
      recipe.data.batch_size, recipe.data.seq_len,
      std::string(to_string(recipe.model.attention.mode)).c_str(), checkpointing, world,
      replicas.distributed() && recipe.distributed.zero ? "zero1" : "adamw", median_ms,
      tokens_per_s,
      peak > 0 ? tokens_per_s / world * model.flops_per_token(recipe.data.seq_len) / peak : 0.0,
      memory_gb, double(optimizer->state_bytes()) / 1e9, exposed[exposed.size() / 2]);
  return 0;
}

}  // namespace infllm::train
