#include "train/train_step.h"

#include <cmath>
#include <cstdio>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "train/run_setup.h"

namespace infllm::train {

StepResult train_step(const TransformerLM& model, AdamW& optimizer, BatchSource& batches,
                      const Recipe& recipe, int64_t step) {
  StepResult result;
  result.lr = learning_rate(schedule_spec(recipe), step);
  int accum = recipe.data.grad_accum;
  Tensor loss_sum;
  for (int micro = 0; micro < accum; ++micro) {
    TokenBatch batch = batches.next();
    Tensor loss = model.loss(batch.inputs, batch.targets, batch.valid_targets);
    backward(mul(loss, 1.0 / accum));
    Tensor value = ops::cast(loss.detach(), DType::f32);
    loss_sum = loss_sum.defined() ? ops::add(loss_sum, value) : value;
  }
  // The one host sync of the step (with grad_norm's): the loss must be known to skip bad steps.
  result.loss = loss_sum.item() / accum;
  result.grad_norm = optimizer.grad_norm();
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) {
    std::fprintf(stderr, "\ninfllm: warning: step %lld has a non-finite %s (loss %g, grad norm "
                 "%g); its update is skipped\n", (long long)step + 1,
                 std::isfinite(result.loss) ? "gradient" : "loss", result.loss, result.grad_norm);
    optimizer.clear_grads();
    result.applied = false;
    return result;
  }
  double clip = recipe.optim.grad_clip;
  double scale = clip > 0 && result.grad_norm > clip ? clip / result.grad_norm : 1.0;
  optimizer.step(result.lr, scale);
  optimizer.clear_grads();
  return result;
}

}  // namespace infllm::train
