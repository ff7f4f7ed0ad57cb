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

class RMSNorm : public Module {
 public:
  RMSNorm(ParameterFactory& factory, int64_t dim, double eps);
  Tensor forward(const Tensor& x) const { return rms_norm(x, weight, eps_); }
  std::pair<Tensor, Tensor> forward_residual(const Tensor& x, const Tensor& residual) const {
    return add_rms_norm(x, residual, weight, eps_);
  }

  Tensor weight;

 private:
  double eps_;
};

}  // namespace infllm
