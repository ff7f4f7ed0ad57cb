#include "autograd/gradcheck.h"

#include <cmath>
#include <cstring>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "autograd/node.h"

namespace infllm {
namespace {

double probed_sum(const Tensor& out, const Tensor& probe) {
  return ops::sum(ops::mul(out, probe)).item();
}

}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, double eps, uint64_t seed) {
  std::vector<Tensor> leaves;
  for (const Tensor& t : inputs) {
    INFLLM_CHECK(!t.requires_grad() || (t.dtype() == DType::f64 && t.device().is_cpu()),
                 "gradcheck: inputs that require grad must be f64 CPU tensors, got ", t.str());
    Tensor leaf = t.clone();
    leaf.set_requires_grad(t.requires_grad());
    leaves.push_back(leaf);
  }
  Tensor out = fn(leaves);
  Tensor probe = ops::normal(out.shape(), seed, 0, 0.0, 1.0, DType::f64);
  backward(sum(mul(out, probe)));

  GradcheckResult result;
  autograd::NoGradGuard no_grad;
  for (size_t i = 0; i < leaves.size(); ++i) {
    if (!leaves[i].requires_grad()) continue;
    INFLLM_CHECK(leaves[i].grad().defined(), "gradcheck: input ", i, " got no gradient");
    std::vector<double> analytic = leaves[i].grad().to_vector<double>();
    double* x = leaves[i].data<double>();
    for (int64_t e = 0; e < leaves[i].numel(); ++e) {
      double saved = x[e];
      x[e] = saved + eps;
      double plus = probed_sum(fn(leaves), probe);
      x[e] = saved - eps;
      double minus = probed_sum(fn(leaves), probe);
      x[e] = saved;
      double numeric = (plus - minus) / (2 * eps);
      double error = std::abs(analytic[e] - numeric) / std::max(1.0, std::abs(numeric));
      if (error > result.max_error) {
        result.max_error = error;
        result.worst = "input " + std::to_string(i) + " element " + std::to_string(e) +
                       ": analytic " + std::to_string(analytic[e]) + " numeric " +
                       std::to_string(numeric);
      }
    }
  }
  return result;
}

}  // namespace infllm
