// Everything a training run checks before it allocates a model or writes into its folder: the
// data files (layout, length, every token against model.vocab_size) and a memory estimate
// against host and GPU memory. A run that cannot work fails here, in seconds, naming the key.
#pragma once

#include "core/device.h"
#include "distributed/launch_env.h"
#include "train/recipe.h"

namespace infllm::train {

// Rank r of a data-parallel run reads its share of data.train (the ranks together read all of
// it); rank 0 alone reads data.val, which only rank 0 evaluates. Not collective.
void check_before_training(const Recipe& recipe, const distributed::LaunchEnv& env, Device device);

// The device this process will train on, known before any collective: choose_device for one
// process, the local rank's GPU for several (Replicas refuses several ranks without GPUs).
Device training_device(const Recipe& recipe, const distributed::LaunchEnv& env);

}  // namespace infllm::train
