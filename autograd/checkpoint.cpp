#include "autograd/checkpoint.h"

#include "autograd/engine.h"
#include "autograd/node.h"
#include "core/ops.h"

namespace infllm {

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs) {
  std::vector<Tensor> outputs;
  {
    autograd::NoGradGuard no_grad;
    outputs = fn(inputs);
  }
  if (!autograd::needs_graph(inputs)) return outputs;
  std::vector<Tensor> saved;
  std::vector<bool> wants_grad;
  for (const Tensor& t : inputs) {
    saved.push_back(t.detach());
    wants_grad.push_back(t.requires_grad());
  }
  std::vector<Tensor*> output_ptrs;
  for (Tensor& t : outputs) output_ptrs.push_back(&t);
  // Parameters used inside fn are leaves of the recomputed graph: their gradients accumulate
  // directly during the inner backward.
  autograd::record("checkpoint", inputs, output_ptrs, [=](const std::vector<Tensor>& g) {
    std::vector<Tensor> replay_inputs;
    for (size_t i = 0; i < saved.size(); ++i) {
      Tensor t = saved[i].detach();
      if (wants_grad[i]) t.set_requires_grad(true);
      replay_inputs.push_back(t);
    }
    std::vector<Tensor> replay = fn(replay_inputs);
    std::vector<Tensor> roots, seeds;
    for (size_t i = 0; i < replay.size(); ++i) {
      if (replay[i].requires_grad()) {
        roots.push_back(replay[i]);
        seeds.push_back(g[i]);
      }
    }
    if (!roots.empty()) backward(roots, seeds);
    std::vector<Tensor> input_grads;
    for (size_t i = 0; i < replay_inputs.size(); ++i) {
      Tensor grad = replay_inputs[i].grad();
      input_grads.push_back(grad.defined() ? ops::cast(grad, saved[i].dtype()) : grad);
    }
    return input_grads;
  });
  return outputs;
}

}  // namespace infllm
