// infllm bench RECIPE [key.sub=value ...] [--steps N] [--warmup W]: times full training steps
// (forward, backward, optimizer) and prints one JSON line, comparable with torch_peer.py train.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "core/device.h"
#include "train/cli_args.h"
#include "train/commands.h"
#include "train/run_setup.h"
#include "train/train_step.h"
#if INFLLM_WITH_CUDA
#include "core/cuda/allocator.h"
#endif

namespace infllm::train {
namespace {

constexpr const char* kHelp = R"(usage: infllm bench RECIPE [section.key=value ...] [--steps N] [--warmup W]

Times training steps of a recipe (data.train: random gives synthetic tokens) and prints JSON:
median step time, tokens/s, MFU and peak device memory.
  --steps N    timed steps (default 10)
  --warmup W   untimed steps first (default 3)
)";

}  // namespace

int bench_command(int argc, char** argv) {
  CliArgs args = parse_cli("bench", argc, argv, {"--steps", "--warmup"}, {});
  if (args.has("--help") || args.positionals.empty()) {
    std::fputs(kHelp, args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  std::vector<std::string> overrides(args.positionals.begin() + 1, args.positionals.end());
  Recipe recipe = load_recipe(args.positionals[0], overrides);
  int64_t steps = args.get_int("--steps", 10), warmup = args.get_int("--warmup", 3);
  recipe.train.steps = std::max<int64_t>(recipe.train.steps, steps + warmup);
  Device device = choose_device(recipe);
  TransformerLM model(model_config(recipe), recipe.train.seed, device,
                      compute_dtype(recipe, device));
  AdamW optimizer(model.named_parameters(), adamw_options(recipe));
  BatchSource batches(recipe, device, 0, 1);
  std::vector<double> times;
  for (int64_t step = 0; step < warmup + steps; ++step) {
    auto start = std::chrono::steady_clock::now();
    train_step(model, optimizer, batches, recipe, step);  // ends in a host sync (loss, norm)
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                    .count();
    if (step >= warmup) times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  double median_ms = times[times.size() / 2];
  double tokens = double(recipe.data.batch_size) * recipe.data.seq_len * recipe.data.grad_accum;
  double tokens_per_s = tokens / (median_ms / 1e3);
  double peak = peak_flops(device);
  double memory_gb = 0;
#if INFLLM_WITH_CUDA
  if (device.is_cuda()) memory_gb = double(cuda::memory_stats(device.index).peak) / 1e9;
#endif
  std::printf("{\"bench\": \"infllm_train_step\", \"recipe\": \"%s\", \"device\": \"%s\", "
              "\"params_M\": %.1f, \"B\": %d, \"T\": %d, \"attention\": \"%s\", "
              "\"step_ms\": %.2f, \"tokens_per_s\": %.0f, \"mfu_989\": %.3f, "
              "\"peak_mem_GB\": %.2f}\n",
              args.positionals[0].c_str(), device.str().c_str(),
              double(model.num_parameters()) / 1e6, recipe.data.batch_size, recipe.data.seq_len,
              std::string(to_string(recipe.attention.mode)).c_str(), median_ms, tokens_per_s,
              peak > 0 ? tokens_per_s * model.flops_per_token(recipe.data.seq_len) / peak : 0.0,
              memory_gb);
  return 0;
}

}  // namespace infllm::train
