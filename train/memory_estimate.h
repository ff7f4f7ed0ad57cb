// What a run will hold in memory, estimated from the recipe alone before anything is allocated,
// so that a recipe that cannot fit (model.n_layers=2000000000, data.prefetch=2000000000) fails
// at once with the keys to change instead of allocating for minutes or ending in bad_alloc.
//
// Every part is a lower bound: the exact parameter count, 4 + 8 + 4 bytes of f32 master copy
// (GPU only), AdamW moments and gradient per parameter, and only part of the activations
// backward must keep. The check fails only when even that does not fit, so it never refuses a run
// that would have fit; a run that passes can still run out of memory later (the allocator then
// names the knobs too).
#pragma once

#include <string>
#include <vector>

#include "train/recipe.h"

namespace infllm::train {

struct MemoryPart {
  std::string what;        // "AdamW moments (f32 m and v)"
  double bytes = 0;        // doubles: absurd recipes overflow 64-bit integers
  std::string keys;        // the recipe keys that size it, the ones to change
  bool on_device = false;  // on the GPU; false: host memory
};

struct MemoryEstimate {
  std::vector<MemoryPart> parts;
  double bytes(bool on_device) const;
};

// The exact number of parameters TransformerLM builds for `model` (embedding, per layer the
// fused qkv, output, gate_up and down projections and two norms, the final norm, the untied
// head).
double parameter_count(const ModelConfig& model);

// `on_gpu`: the model trains on a GPU (bf16 weights, f32 master copies) rather than the host
// (f32 weights that are their own masters). `world_size` divides the optimizer state under
// ZeRO-1; `ranks_per_host` multiplies the host-side loader buffers.
MemoryEstimate estimate_memory(const Recipe& recipe, bool on_gpu, int world_size = 1,
                               int ranks_per_host = 1);

// Host memory this process may still use: MemAvailable from /proc/meminfo, lowered by a cgroup
// (v2) memory limit when one applies; 0 when unknown.
double available_host_bytes();

// Throws an infllm::Error when the host parts exceed `host_available` or the device parts exceed
// `device_available` (0 = unknown: not checked). The message gives both figures and every part
// with its keys, largest first. `device_name` names the GPU ("cuda:0").
void check_memory(const MemoryEstimate& estimate, double host_available, double device_available,
                  const std::string& device_name);

}  // namespace infllm::train
