// CPU reference of SwiGLU in double.
#include "layers/swiglu_kernels.h"

#include <cmath>

#include "core/error.h"

namespace infllm {
namespace {

void check_shape(const char* op, int64_t N, int64_t F) {
  INFLLM_CHECK(N > 0 && F > 0, op, ": rows N=", N, " and hidden width F=", F,
               " must be positive (gate_up is [N, 2F])");
}

double sigmoid(double g) {
  return 1.0 / (1.0 + std::exp(-g));
}

}  // namespace

template <class Float>
void swiglu_forward_cpu(const Float* gate_up, Float* h, int64_t N, int64_t F) {
  check_shape("swiglu_forward", N, F);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t f = 0; f < F; ++f) {
      const double g = double(gate_up[n * 2 * F + f]);
      const double u = double(gate_up[n * 2 * F + F + f]);
      h[n * F + f] = Float(g * sigmoid(g) * u);
    }
  }
}

template <class Float>
void swiglu_backward_cpu(const Float* dh, const Float* gate_up, Float* dgate_up, int64_t N,
                         int64_t F) {
  check_shape("swiglu_backward", N, F);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t f = 0; f < F; ++f) {
      const double g = double(gate_up[n * 2 * F + f]);
      const double u = double(gate_up[n * 2 * F + F + f]);
      const double d = double(dh[n * F + f]);
      const double sg = sigmoid(g);
      dgate_up[n * 2 * F + f] = Float(d * u * sg * (1.0 + g * (1.0 - sg)));
      dgate_up[n * 2 * F + F + f] = Float(d * g * sg);
    }
  }
}

template void swiglu_forward_cpu<float>(const float*, float*, int64_t, int64_t);
template void swiglu_forward_cpu<double>(const double*, double*, int64_t, int64_t);
template void swiglu_backward_cpu<float>(const float*, const float*, float*, int64_t, int64_t);
template void swiglu_backward_cpu<double>(const double*, const double*, double*, int64_t, int64_t);

}  // namespace infllm
