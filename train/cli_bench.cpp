// infllm bench RECIPE [key.sub=value ...] [--steps N] [--warmup W]: times full training steps
// (forward, backward, optimizer) and prints one JSON line, comparable with torch_peer.py train.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "core/cuda/allocator.h"
#include "core/device.h"
#include "train/cli_args.h"
#include "train/commands.h"
#include "train/memory_estimate.h"
#include "train/replicas.h"
#include "train/run_setup.h"
#include "train/train_step.h"

namespace infllm::train {
namespace {

constexpr const char* kHelp =
    R"(usage: infllm bench RECIPE [section.key=value ...] [--steps N] [--warmup W] [--nproc N]

Times training steps of a recipe (data.train: random gives synthetic tokens) and prints JSON:
median step time, tokens/s (all ranks together), MFU per GPU and peak device memory.
  --steps N    timed steps (default 10)
  --warmup W   untimed steps first (default 3)
  --nproc N    data parallel over N local GPUs (the recipe's distributed section applies)
)";

}  // namespace

int bench_command(int argc, char** argv) {
  CliArgs args = parse_cli("bench", argc, argv, {"--steps", "--warmup", "--nproc"}, {});
  if (args.has("--help") || args.positionals.empty()) {
    std::fputs(kHelp, args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  if (int64_t nproc = args.get_int("--nproc", 0, {1, kMaxLocalRanks}); nproc > 0)
    return launch_local_ranks("bench", argc, argv, int(nproc));
  std::vector<std::string> overrides(args.positionals.begin() + 1, args.positionals.end());
  Recipe recipe = load_recipe(args.positionals[0], overrides);
  int64_t steps = args.get_int("--steps", 10, {1}), warmup = args.get_int("--warmup", 3, {0});
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
