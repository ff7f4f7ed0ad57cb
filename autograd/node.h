// The graph: every differentiable op's output points to a Node that knows how to turn the
// gradients of its outputs into gradients of its inputs. A Node's backward is a closure that
// captures what it saved in forward; the engine drops the closure right after running it, which
// frees the saved tensors as backward proceeds.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace infllm::autograd {

// Where a gradient goes: another node's output, or a leaf tensor's .grad.
struct Edge {
  std::shared_ptr<Node> node;
  int output_index = 0;
  std::shared_ptr<AutogradMeta> leaf;
  bool defined() const { return node || leaf; }
};

// grads[i] is the gradient of output i (zeros if nothing used it). Returns one gradient per
// input (undefined where the input needs none). Saved tensors must be captured detached
// (x.detach()) so a node never owns its own outputs' autograd state (that would be a cycle).
using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grads)>;

class Node {
 public:
  Node(std::string name, std::vector<Edge> inputs, std::vector<Tensor> output_templates,
       BackwardFn backward);

  const std::string& name() const { return name_; }
  const std::vector<Edge>& inputs() const { return inputs_; }
  size_t num_outputs() const { return output_shapes_.size(); }
  // Runs backward once; the saved state is released afterwards.
  std::vector<Tensor> apply(std::vector<Tensor> grads);

 private:
  std::string name_;
  std::vector<Edge> inputs_;
  std::vector<Shape> output_shapes_;  // for zero gradients of unused outputs
  std::vector<DType> output_dtypes_;
  Device device_;
  BackwardFn backward_;
};

// Graph recording is on by default; NoGradGuard turns it off for its scope (evaluation,
// optimizer updates, checkpointed forwards).
bool grad_enabled();
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};
struct NoGradGuard : GradModeGuard {
  NoGradGuard() : GradModeGuard(false) {}
};

// True if recording is on and any input requires grad: then the op must call record().
bool needs_graph(const std::vector<Tensor>& inputs);

// Attaches a new node to `outputs` (marking them requires_grad) when needs_graph(inputs).
void record(const char* name, const std::vector<Tensor>& inputs, std::vector<Tensor*> outputs,
            BackwardFn backward);
inline Tensor record(const char* name, const std::vector<Tensor>& inputs, Tensor output,
                     BackwardFn backward) {
  record(name, inputs, {&output}, std::move(backward));
  return output;
}

}  // namespace infllm::autograd
