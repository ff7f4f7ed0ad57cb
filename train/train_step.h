// One optimizer step: grad_accum micro-batches forward and backward (gradients averaged across
// data-parallel ranks during the last backward), the global gradient norm, clipping, and the
// AdamW update - or, when the loss or a gradient is not finite, no update.
#pragma once

#include "layers/transformer.h"
#include "optim/optimizer.h"
#include "train/batch_source.h"
#include "train/recipe.h"
#include "train/replicas.h"

namespace infllm::train {

struct StepResult {
  double loss = 0;       // mean over the micro-batches and the ranks
  double grad_norm = 0;  // before clipping
  double lr = 0;
  bool applied = true;  // false: non-finite, the update was skipped
  bool stop = false;    // some rank was asked to stop (SIGINT/SIGTERM): every rank stops here
};

StepResult train_step(const TransformerLM& model, Optimizer& optimizer, BatchSource& batches,
                      const Recipe& recipe, int64_t step, Replicas& replicas);

}  // namespace infllm::train
