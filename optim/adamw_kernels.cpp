// CPU reference of the AdamW step and the gradient sum of squares, plus the chunk plan of the
// multi-tensor CUDA launch.
#include "optim/adamw_kernels.h"

#include <cmath>

#include "core/bf16.h"
#include "core/error.h"

namespace infllm {

template <class Float>
void adamw_update_cpu(Float* param, Float* exp_avg, Float* exp_avg_sq, const Float* grad,
                      uint16_t* param_bf16, int64_t n, const AdamWHyper& hp, float lr_scale,
                      float weight_decay) {
  INFLLM_CHECK(n > 0 && hp.step >= 1, "adamw_update: n=", n, " must be positive and step=", hp.step,
               " must start at 1");
  const double lr = double(hp.lr) * double(lr_scale);
  const double beta1 = hp.beta1;
  const double beta2 = hp.beta2;
  const double step_size = lr / (1.0 - std::pow(beta1, double(hp.step)));
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(beta2, double(hp.step)));
  const double decay = 1.0 - lr * double(weight_decay);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double g = double(grad[i]) * double(hp.grad_scale);
    const double m = beta1 * double(exp_avg[i]) + (1.0 - beta1) * g;
    const double v = beta2 * double(exp_avg_sq[i]) + (1.0 - beta2) * g * g;
    const double denom = std::sqrt(v) / bias_correction2_sqrt + double(hp.eps);
    const double p = double(param[i]) * decay - step_size * m / denom;
    exp_avg[i] = Float(m);
    exp_avg_sq[i] = Float(v);
    param[i] = Float(p);
    if (param_bf16) param_bf16[i] = float_to_bf16(float(p)).bits;
  }
}

template <class Float>
double grad_sum_squares_cpu(const Float* grad, int64_t n) {
  INFLLM_CHECK(n > 0, "grad_sum_squares: n=", n, " must be positive");
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += double(grad[i]) * double(grad[i]);
  return sum;
}

int64_t adamw_plan_chunks(AdamWTensor* tensors, int count) {
  INFLLM_CHECK(count > 0, "adamw_plan_chunks: no tensors (count=", count, ")");
  int64_t chunks = 0;
  for (int k = 0; k < count; ++k) {
    const AdamWTensor& t = tensors[k];
    INFLLM_CHECK(
        t.n > 0 && t.param && t.exp_avg && t.exp_avg_sq && t.grad, "adamw_plan_chunks: ", "tensor ",
        k, " has n=", t.n,
        " or a null param/exp_avg/exp_avg_sq/grad pointer; every parameter needs all four");
    tensors[k].first_chunk = chunks;
    chunks += (t.n + kAdamWChunk - 1) / kAdamWChunk;
  }
  return chunks;
}

template void adamw_update_cpu<float>(float*, float*, float*, const float*, uint16_t*, int64_t,
                                      const AdamWHyper&, float, float);
template void adamw_update_cpu<double>(double*, double*, double*, const double*, uint16_t*, int64_t,
                                       const AdamWHyper&, float, float);
template double grad_sum_squares_cpu<float>(const float*, int64_t);
template double grad_sum_squares_cpu<double>(const double*, int64_t);

}  // namespace infllm
