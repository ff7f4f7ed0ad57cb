#include "autograd/node.h"

#include "core/ops.h"

namespace infllm::autograd {
namespace {
thread_local bool grad_mode = true;
}

bool grad_enabled() {
  return grad_mode;
}
GradModeGuard::GradModeGuard(bool enabled) : previous_(grad_mode) {
  grad_mode = enabled;
}
GradModeGuard::~GradModeGuard() {
  grad_mode = previous_;
}

Node::Node(std::string name, std::vector<Edge> inputs, std::vector<Tensor> output_templates,
           BackwardFn backward)
    : name_(std::move(name)), inputs_(std::move(inputs)), backward_(std::move(backward)) {
  for (const Tensor& t : output_templates) {
    output_shapes_.push_back(t.shape());
    output_dtypes_.push_back(t.dtype());
    device_ = t.device();
  }
}

std::vector<Tensor> Node::apply(std::vector<Tensor> grads) {
  INFLLM_CHECK(backward_, "backward through ", name_,
               " a second time: the graph was freed by the "
               "first backward (run the forward again)");
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined()) grads[i] = ops::zeros(output_shapes_[i], output_dtypes_[i], device_);
  }
  BackwardFn backward = std::move(backward_);
  backward_ = nullptr;
  std::vector<Tensor> input_grads = backward(grads);
  INFLLM_CHECK(input_grads.size() == inputs_.size(), name_, " backward returned ",
               input_grads.size(), " gradients for ", inputs_.size(), " inputs");
  return input_grads;
}

bool needs_graph(const std::vector<Tensor>& inputs) {
  if (!grad_mode) return false;
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

void record(const char* name, const std::vector<Tensor>& inputs, std::vector<Tensor*> outputs,
            BackwardFn backward) {
  if (!needs_graph(inputs)) return;
  std::vector<Edge> edges;
  for (const Tensor& t : inputs) {
    Edge edge;
    if (t.defined() && t.requires_grad()) {
      if (t.grad_fn()) {
        edge.node = t.grad_fn();
        edge.output_index = t.autograd_meta()->output_index;
      } else {
        edge.leaf = t.autograd_meta();
      }
    }
    edges.push_back(edge);
  }
  std::vector<Tensor> templates;
  for (Tensor* out : outputs) templates.push_back(*out);
  auto node = std::make_shared<Node>(name, std::move(edges), templates, std::move(backward));
  for (size_t i = 0; i < outputs.size(); ++i) {
    *outputs[i] = outputs[i]->detach();  // never share state with a tensor the op passed through
    AutogradMeta& meta = outputs[i]->ensure_autograd_meta();
    meta.requires_grad = true;
    meta.grad_fn = node;
    meta.output_index = int(i);
  }
}

}  // namespace infllm::autograd
