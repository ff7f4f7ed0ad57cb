// RMSNorm over the last axis: y = x / sqrt(mean(x^2) + eps) * weight.
#pragma once

#include "layers/module.h"

namespace infllm {

// Differentiable. CPU: f32/f64; CUDA: bf16 (fused kernels in rms_norm_kernels).
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps);

class RMSNorm : public Module {
 public:
  RMSNorm(ParameterFactory& factory, int64_t dim, double eps);
  Tensor forward(const Tensor& x) const { return rms_norm(x, weight, eps_); }

  Tensor weight;

 private:
  double eps_;
};

}  // namespace infllm
