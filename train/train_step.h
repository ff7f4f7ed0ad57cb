// One optimizer step: grad_accum micro-batches forward and backward, the global gradient norm,
// clipping, and the AdamW update - or, when the loss or a gradient is not finite, no update.
#pragma once

#include "layers/transformer.h"
#include "optim/adamw.h"
#include "train/batch_source.h"
#include "train/recipe.h"

namespace infllm::train {

struct StepResult {
  double loss = 0;       // mean over the micro-batches
  double grad_norm = 0;  // before clipping
  double lr = 0;
  bool applied = true;   // false: non-finite, the update was skipped
};

StepResult train_step(const TransformerLM& model, AdamW& optimizer, BatchSource& batches,
                      const Recipe& recipe, int64_t step);

}  // namespace infllm::train
