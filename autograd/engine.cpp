#include "autograd/engine.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "autograd/node.h"
#include "core/ops.h"

namespace infllm {
namespace {

using autograd::Edge;
using autograd::Node;

void accumulate(Tensor& slot, const Tensor& grad) {
  if (!slot.defined()) {
    slot = grad;
  } else {
    slot = ops::add(slot, grad);
  }
}

void accumulate_into_leaf(AutogradMeta& leaf, const Tensor& grad) {
  DType acc = grad.dtype() == DType::f64 ? DType::f64 : DType::f32;
  if (!leaf.grad.defined()) {
    // Adopt the tensor when nothing else holds its storage; otherwise take a private copy, since
    // it may also be another node's gradient (and the leaf's grad is accumulated in place).
    bool sole_owner = grad.storage().use_count() == 1 && grad.is_contiguous();
    if (grad.dtype() != acc) {
      leaf.grad = ops::cast(grad, acc);
    } else {
      leaf.grad = sole_owner ? grad.detach() : grad.clone();
    }
  } else {
    ops::add_(leaf.grad, grad);
  }
  if (leaf.on_grad_accumulated) leaf.on_grad_accumulated();
}

// Number of graph edges that point at each node: a node runs once all of them delivered.
std::unordered_map<Node*, int> count_dependencies(const std::vector<Node*>& roots) {
  std::unordered_map<Node*, int> count;
  std::unordered_set<Node*> seen(roots.begin(), roots.end());
  std::vector<Node*> stack(roots.begin(), roots.end());
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (const Edge& edge : node->inputs()) {
      if (!edge.node) continue;
      ++count[edge.node.get()];
      if (seen.insert(edge.node.get()).second) stack.push_back(edge.node.get());
    }
  }
  return count;
}

}  // namespace

void backward(const Tensor& loss) {
  INFLLM_CHECK(loss.numel() == 1, "backward() without a seed needs a single-element loss, got ",
               loss.str());
  backward({loss}, {ops::full(loss.shape(), 1.0, loss.dtype(), loss.device())});
}

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds) {
  INFLLM_CHECK(roots.size() == seeds.size(), "backward: ", roots.size(), " roots but ",
               seeds.size(), " seed gradients");
  std::unordered_map<Node*, std::vector<Tensor>> pending;  // gradients waiting per node output
  std::unordered_map<Node*, std::shared_ptr<Node>> keep;   // nodes stay alive while pending
  std::vector<Node*> root_nodes;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& root = roots[i];
    INFLLM_CHECK(root.requires_grad(), "backward: root ", root.str(),
                 " does not require grad "
                 "(no parameter with requires_grad was used to compute it)");
    INFLLM_CHECK(seeds[i].shape() == root.shape(), "backward: seed ", seeds[i].str(),
                 " does not match root ", root.str());
    if (!root.grad_fn()) {
      accumulate_into_leaf(*root.autograd_meta(), seeds[i]);
      continue;
    }
    Node* node = root.grad_fn().get();
    keep[node] = root.grad_fn();
    auto& slots = pending[node];
    slots.resize(node->num_outputs());
    accumulate(slots[root.autograd_meta()->output_index], seeds[i]);
    root_nodes.push_back(node);
  }
  auto dependencies = count_dependencies(root_nodes);
  std::vector<Node*> ready;
  for (Node* node : root_nodes) {
    if (dependencies[node] == 0 && std::find(ready.begin(), ready.end(), node) == ready.end()) {
      ready.push_back(node);
    }
  }
  while (!ready.empty()) {
    Node* node = ready.back();
    ready.pop_back();
    std::shared_ptr<Node> owner = keep[node];
    std::vector<Tensor> grads = std::move(pending[node]);
    pending.erase(node);
    keep.erase(node);
    grads.resize(node->num_outputs());
    std::vector<Tensor> input_grads = node->apply(std::move(grads));
    for (size_t i = 0; i < input_grads.size(); ++i) {
      const Edge& edge = node->inputs()[i];
      const Tensor& grad = input_grads[i];
      if (!edge.defined()) continue;
      if (edge.leaf) {
        if (grad.defined()) accumulate_into_leaf(*edge.leaf, grad);
        continue;
      }
      Node* next = edge.node.get();
      keep[next] = edge.node;
      auto& slots = pending[next];
      slots.resize(next->num_outputs());
      if (grad.defined()) accumulate(slots[edge.output_index], grad);
      if (--dependencies[next] == 0) ready.push_back(next);
    }
  }
}

}  // namespace infllm
