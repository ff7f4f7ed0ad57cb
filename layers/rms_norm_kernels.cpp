// CPU reference of RMSNorm: plain loops, rows in parallel, sums in double.
#include "layers/rms_norm_kernels.h"

#include <cmath>

#include "core/error.h"

namespace infllm {
namespace {

void check_shape(const char* op, int64_t N, int64_t C) {
  INFLLM_CHECK(N > 0 && C > 0, op, ": rows N=", N, " and width C=", C,
               " must be positive (pass x as a contiguous [N, C] tensor)");
}

// Normalizes each row of `in` (already the residual sum where there is one).
template <class Float>
void normalize_rows(const Float* in, const Float* w, Float* y, Float* rstd, int64_t N, int64_t C,
                    double eps) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const Float* row = in + n * C;
    double sum_sq = 0.0;
    for (int64_t c = 0; c < C; ++c) sum_sq += double(row[c]) * double(row[c]);
    const double r = 1.0 / std::sqrt(sum_sq / double(C) + eps);
    rstd[n] = Float(r);
    for (int64_t c = 0; c < C; ++c) y[n * C + c] = Float(double(row[c]) * r * double(w[c]));
  }
}

}  // namespace

template <class Float>
void rms_norm_forward_cpu(const Float* x, const Float* w, Float* y, Float* rstd, int64_t N,
                          int64_t C, double eps) {
  check_shape("rms_norm_forward", N, C);
  normalize_rows(x, w, y, rstd, N, C, eps);
}

template <class Float>
void rms_norm_residual_forward_cpu(const Float* x, const Float* residual, Float* sum,
                                   const Float* w, Float* y, Float* rstd, int64_t N, int64_t C,
                                   double eps) {
  check_shape("rms_norm_residual_forward", N, C);
  for (int64_t i = 0; i < N * C; ++i) sum[i] = x[i] + residual[i];
  normalize_rows(sum, w, y, rstd, N, C, eps);
}

// With r = rstd[n] and g = dy * w:
//   dx[c] = r * (g[c] - x[c] * r^2 * mean_c'(g[c'] * x[c']))   (+ dsum[c])
//   dw[c] = sum_n dy[n, c] * x[n, c] * r[n]
template <class Float>
void rms_norm_backward_cpu(const Float* dy, const Float* x, const Float* w, const Float* rstd,
                           const Float* dsum, Float* dx, Float* dw, int64_t N, int64_t C) {
  check_shape("rms_norm_backward", N, C);
// dw first, so that dx may overwrite dy. Columns in parallel, rows in order: the same sum on
// any thread count.
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    double acc = 0.0;
    for (int64_t n = 0; n < N; ++n)
      acc += double(dy[n * C + c]) * double(x[n * C + c]) * double(rstd[n]);
    dw[c] = Float(acc);
  }
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const int64_t base = n * C;
    const double r = double(rstd[n]);
    double dot = 0.0;
    for (int64_t c = 0; c < C; ++c)
      dot += double(dy[base + c]) * double(w[c]) * double(x[base + c]);
    const double correction = r * r * dot / double(C);
    for (int64_t c = 0; c < C; ++c) {
      double g = r * (double(dy[base + c]) * double(w[c]) - double(x[base + c]) * correction);
      if (dsum) g += double(dsum[base + c]);
      dx[base + c] = Float(g);
    }
  }
}

#define INSTANTIATE(Float)                                                                         \
  template void rms_norm_forward_cpu<Float>(const Float*, const Float*, Float*, Float*, int64_t,   \
                                            int64_t, double);                                      \
  template void rms_norm_residual_forward_cpu<Float>(                                              \
      const Float*, const Float*, Float*, const Float*, Float*, Float*, int64_t, int64_t, double); \
  template void rms_norm_backward_cpu<Float>(const Float*, const Float*, const Float*,             \
                                             const Float*, const Float*, Float*, Float*, int64_t,  \
                                             int64_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace infllm
