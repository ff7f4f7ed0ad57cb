// RMSNorm over the last axis: y = x / sqrt(mean(x^2) + eps) * weight.
#pragma once

#include <utility>

#include "layers/module.h"

namespace infllm {

// Differentiable. CPU: f32/f64; CUDA: bf16 (fused kernels in rms_norm_kernels).
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps);
// The residual step of a pre-norm block in one pass: {sum = x + residual, rms_norm(sum)}. Its
// backward adds sum's own gradient inside the norm's backward kernel, so neither the sum nor the
// gradient accumulation at the fork costs a separate elementwise pass.
std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual,
                                       const Tensor& weight, double eps);

// The residual stream of a pre-norm model where it enters a norm: its value is x + branch, kept
// as the pair so that the norm adds them in its own pass (add_rms_norm) instead of an elementwise
// add before it and a gradient accumulation after. An undefined branch adds nothing.
struct Residual {
  Tensor x, branch;
};

class RMSNorm : public Module {
 public:
  RMSNorm(ParameterFactory& factory, int64_t dim, double eps);
  Tensor forward(const Tensor& x) const { return rms_norm(x, weight, eps_); }
  // {x + branch, rms_norm(x + branch)} of a residual stream; {x, rms_norm(x)} without a branch.
  std::pair<Tensor, Tensor> forward_residual(const Residual& r) const {
    if (!r.branch.defined()) return {r.x, forward(r.x)};
    return add_rms_norm(r.x, r.branch, weight, eps_);
  }

  Tensor weight;

 private:
  double eps_;
};

}  // namespace infllm
