// CPU reference of the fused cross-entropy: one row at a time, in double.
#include "layers/cross_entropy_kernels.h"

#include <cmath>

#include "core/error.h"

namespace infllm {

template <class Float>
void cross_entropy_forward_backward_cpu(const Float* logits, const int32_t* targets, Float* loss,
                                        Float* dlogits, int64_t N, int64_t V, double grad_scale) {
  INFLLM_CHECK(N > 0 && V > 0, "cross_entropy: rows N=", N, " and vocabulary V=", V,
               " must be positive (logits are [N, V])");
  for (int64_t n = 0; n < N; ++n) {
    INFLLM_CHECK(targets[n] == -1 || (targets[n] >= 0 && targets[n] < V), "cross_entropy: target ",
                 targets[n], " of row ", n, " is outside [0, ", V,
                 "); use -1 to ignore a row, and check the tokenizer's vocab_size");
  }
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const Float* row = logits + n * V;
    const int32_t target = targets[n];
    if (target == -1) {
      loss[n] = Float(0);
      if (dlogits) {
        for (int64_t v = 0; v < V; ++v) dlogits[n * V + v] = Float(0);
      }
      continue;
    }
    double max = double(row[0]);
    for (int64_t v = 1; v < V; ++v) max = std::fmax(max, double(row[v]));
    double sum = 0.0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - max);
    const double target_logit = double(row[target]);  // read before an in-place write
    loss[n] = Float(std::log(sum) + max - target_logit);
    if (dlogits) {
      for (int64_t v = 0; v < V; ++v) {
        const double p = std::exp(double(row[v]) - max) / sum;
        dlogits[n * V + v] = Float((p - (v == target ? 1.0 : 0.0)) * grad_scale);
      }
    }
  }
}

template void cross_entropy_forward_backward_cpu<float>(const float*, const int32_t*, float*,
                                                        float*, int64_t, int64_t, double);
template void cross_entropy_forward_backward_cpu<double>(const double*, const int32_t*, double*,
                                                         double*, int64_t, int64_t, double);

}  // namespace infllm
