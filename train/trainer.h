// The training loop: a recipe in, a run folder out (resolved recipe, metrics.jsonl, TensorBoard
// events, checkpoints). Handles gradient accumulation, clipping, the LR schedule, periodic
// validation, checkpoints (every N steps, on SIGINT/SIGTERM, at the end), bit-for-bit resume on
// the CPU, a weights-only start from another run's checkpoint (finetune), and non-finite steps
// (skipped with a warning; the run stops after train.max_bad_steps of them).
#pragma once

#include <string>

#include "train/recipe.h"

namespace infllm::train {

struct TrainOptions {
  bool resume = false;  // continue from the newest checkpoint in <out_dir>/checkpoints
  // With resume: when the newest checkpoint is damaged, continue from the newest that verifies
  // (the damaged ones are renamed to *.damaged); without it that is an error naming both.
  bool resume_last_good = false;
};

// Runs the whole training; returns the process exit code (0 also after a signal-triggered
// checkpoint-and-stop).
int train(const Recipe& recipe, const TrainOptions& options);

}  // namespace infllm::train
