#include "train/preflight.h"

#include "data/token_file_check.h"
#include "train/memory_estimate.h"
#include "train/run_setup.h"

namespace infllm::train {

Device training_device(const Recipe& recipe, const distributed::LaunchEnv& env) {
  if (env.world_size == 1) return choose_device(recipe);
  return Device::cuda(env.local_rank);
}

void check_before_training(const Recipe& recipe, const distributed::LaunchEnv& env, Device device) {
  // Memory first: it needs no file and catches the absurd sizes before anything is read.
  const MemoryEstimate estimate =
      estimate_memory(recipe, device.is_cuda(), env.world_size, /*ranks_per_host=*/1);
  const DeviceMemory gpu = device_memory(device);
  check_memory(estimate, available_host_bytes(), double(gpu.free_bytes), device.str());

  const int64_t T = recipe.data.seq_len;
  if (recipe.data.train != kRandomData) {
    data::TokenFileNeeds needs;
    needs.key = "data.train";
    needs.min_tokens = 2 * T;  // one window plus the loader's per-epoch shift of up to T tokens
    needs.min_tokens_fix = "lower data.seq_len or use a larger corpus";
    needs.vocab_limit = recipe.model.vocab_size;
    data::check_token_file(recipe.data.train, needs, env.rank, env.world_size);
  }
  if (env.rank == 0 && !recipe.data.val.empty() && recipe.data.val != kRandomData) {
    data::TokenFileNeeds needs;
    needs.key = "data.val";
    needs.min_tokens = T + 1;
    needs.min_tokens_fix =
        "lower data.seq_len or hold out more validation text (infllm prepare --val-docs N)";
    needs.vocab_limit = recipe.model.vocab_size;
    data::check_token_file(recipe.data.val, needs);
  }
}

}  // namespace infllm::train
