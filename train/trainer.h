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
  // Start over in a folder that holds an earlier run, moving its files into
  // <out_dir>/previous-<date>-<time>/ (train/run_folder.h); without it that is an error.
  bool overwrite = false;
};

// Runs the whole training; returns the process exit code (0 also after a signal-triggered
// checkpoint-and-stop). Before anything is allocated or written: rank 0 claims the run folder
// (train/run_folder.h), then the data and a memory estimate are checked (train/preflight.h);
// the folder changes only once the run is accepted (any resume checkpoint loaded).
int train(const Recipe& recipe, const TrainOptions& options);

}  // namespace infllm::train
