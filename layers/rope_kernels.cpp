// CPU reference of RoPE: angles, cos and sin in double.
#include "layers/rope_kernels.h"

#include <cmath>
#include <vector>

#include "core/error.h"

namespace infllm {
namespace {

// direction +1 rotates by +angle (forward), -1 by -angle (backward).
template <class Float>
void rope_rotate_cpu(const char* op, const Float* in, Float* out, int64_t B, int64_t T, int64_t H,
                     int64_t D, double theta, int64_t pos_offset, int64_t rotated,
                     double direction) {
  INFLLM_CHECK(B > 0 && T > 0 && H > 0 && D > 0 && D % 2 == 0, op, ": shape [B, T, H, D] = [", B,
               ", ", T, ", ", H, ", ", D, "] must be positive with an even head dim D");
  INFLLM_CHECK(theta > 1.0 && pos_offset >= 0, op, ": theta=", theta,
               " must be > 1 and pos_offset=", pos_offset, " >= 0");
  INFLLM_CHECK(rotated >= 0 && rotated <= H, op, ": rotated_heads=", rotated,
               " must be in [0, H=", H, "]");
  const int64_t half = D / 2;
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(theta, -2.0 * double(i) / double(D));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const double p = double(pos_offset + t);
    for (int64_t i = 0; i < half; ++i) {
      const double cos_p = std::cos(p * inv_freq[i]);
      const double sin_p = direction * std::sin(p * inv_freq[i]);
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t h = 0; h < H; ++h) {
          const double c = h < rotated ? cos_p : 1.0, s = h < rotated ? sin_p : 0.0;
          const int64_t base = ((b * T + t) * H + h) * D;
          const double x1 = double(in[base + i]);
          const double x2 = double(in[base + half + i]);
          out[base + i] = Float(x1 * c - x2 * s);
          out[base + half + i] = Float(x2 * c + x1 * s);
        }
      }
    }
  }
}

}  // namespace

template <class Float>
void rope_forward_cpu(const Float* in, Float* out, int64_t B, int64_t T, int64_t H, int64_t D,
                      double theta, int64_t pos_offset, int64_t rotated_heads) {
  rope_rotate_cpu("rope_forward", in, out, B, T, H, D, theta, pos_offset, rotated_heads, 1.0);
}

template <class Float>
void rope_backward_cpu(const Float* dout, Float* din, int64_t B, int64_t T, int64_t H, int64_t D,
                       double theta, int64_t pos_offset, int64_t rotated_heads) {
  rope_rotate_cpu("rope_backward", dout, din, B, T, H, D, theta, pos_offset, rotated_heads, -1.0);
}

#define INSTANTIATE(Float)                                                                         \
  template void rope_forward_cpu<Float>(const Float*, Float*, int64_t, int64_t, int64_t, int64_t,  \
                                        double, int64_t, int64_t);                                 \
  template void rope_backward_cpu<Float>(const Float*, Float*, int64_t, int64_t, int64_t, int64_t, \
                                         double, int64_t, int64_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace infllm
