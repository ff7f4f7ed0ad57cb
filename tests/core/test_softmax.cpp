// Softmax / log-softmax and their backward against f64.
#include "core/kernels/softmax.h"

#include <cmath>

#include "tests/test_util.h"

namespace infllm {
namespace {

using testing::as_f64;
using testing::rel_error;

std::vector<double> reference_softmax(const std::vector<double>& x, int64_t n, bool log) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / n; ++r) {
    double m = -INFINITY, total = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, x[r * n + i]);
    for (int64_t i = 0; i < n; ++i) total += std::exp(x[r * n + i] - m);
    for (int64_t i = 0; i < n; ++i) {
      double shifted = x[r * n + i] - m;
      y[r * n + i] = log ? shifted - std::log(total) : std::exp(shifted) / total;
    }
  }
  return y;
}

TEST(Softmax, ForwardAndBackwardMatchF64) {
  const int64_t rows = 7, n = 301;
  for (bool log : {false, true}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      Tensor x = testing::random_normal({rows, n}, dtype, Device::cpu(), 3.0);
      Tensor y = log ? ops::log_softmax(x) : ops::softmax(x);
      std::vector<double> yr = reference_softmax(as_f64(x), n, log);
      double tolerance = dtype == DType::f32 ? 1e-5 : 1e-2;
      EXPECT_LT(rel_error(y, yr), tolerance);
      Tensor dy = testing::random_normal({rows, n}, dtype);
      std::vector<double> dyv = as_f64(dy), dx(dyv.size());
      for (int64_t r = 0; r < rows; ++r) {
        double dot = 0;
        for (int64_t i = 0; i < n; ++i)
          dot += log ? dyv[r * n + i] : dyv[r * n + i] * yr[r * n + i];
        for (int64_t i = 0; i < n; ++i) {
          double yi = yr[r * n + i], g = dyv[r * n + i];
          dx[r * n + i] = log ? g - std::exp(yi) * dot : yi * (g - dot);
        }
      }
      EXPECT_LT(rel_error(ops::softmax_backward(y, dy, log), dx), tolerance);
    }
  }
}

TEST(Softmax, LargeLogitsStayFinite) {
  Tensor x = ops::add(testing::random_normal({2, 50}), 1000.0);
  for (double v : as_f64(ops::softmax(x))) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace infllm
