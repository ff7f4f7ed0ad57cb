#include "train/train_step.h"

#include <cmath>
#include <cstdio>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "train/run_setup.h"
#include "train/signals.h"

namespace infllm::train {

StepResult train_step(const TransformerLM& model, Optimizer& optimizer, BatchSource& batches,
                      const Recipe& recipe, int64_t step, Replicas& replicas) {
  StepResult result;
  result.lr = learning_rate(recipe, step);
  int accum = recipe.data.grad_accum;
  Tensor loss_sum;
  for (int micro = 0; micro < accum; ++micro) {
    TokenBatch batch = batches.next();
    Tensor loss = model.loss(batch.inputs, batch.targets, batch.valid_targets);
    replicas.before_backward(micro == accum - 1);
    backward(mul(loss, 1.0 / accum));
    replicas.after_backward();
    Tensor value = ops::cast(loss.detach(), DType::f32);
    loss_sum = loss_sum.defined() ? ops::add(loss_sum, value) : value;
  }
  // The one host round trip of the step (with grad_norm's): the loss must be known to skip bad
  // steps, and every rank must take the same decisions (skip, stop) at the same step.
  std::vector<double> agreed = replicas.mean({loss_sum.item() / accum, stop_requested() ? 1. : 0.});
  result.loss = agreed[0];
  result.stop = agreed[1] > 0;
  result.grad_norm = optimizer.grad_norm();  // of the averaged gradients: equal on every rank
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) {
    if (replicas.writer())
      std::fprintf(stderr,
                   "\ninfllm: warning: step %lld has a non-finite %s (loss %g, grad norm "
                   "%g); its update is skipped\n",
                   (long long)step + 1, std::isfinite(result.loss) ? "gradient" : "loss",
                   result.loss, result.grad_norm);
    optimizer.clear_grads();
    result.applied = false;
    return result;
  }
  optimizer.step(result.lr, grad_clip_scale(recipe.optim, result.grad_norm));
  optimizer.clear_grads();
  return result;
}

}  // namespace infllm::train
