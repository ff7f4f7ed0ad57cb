// CPU reference of softmax / log-softmax over rows, max-subtracted for stability.
#include "core/kernels/softmax.h"

#include <algorithm>
#include <cmath>

#include "core/cpu/strided.h"

namespace infllm::cpu {

void softmax(const Tensor& x, bool log, Tensor& y) {
  int64_t n = x.dim() == 0 ? 1 : x.size(-1);
  int64_t rows = n == 0 ? 0 : x.numel() / n;
  visit_float(x.dtype(), "softmax", [&]<class T>() {
    const T* in = x.data<T>();
    T* out = y.data<T>();
#pragma omp parallel for if (rows > 16)
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = in + r * n;
      double row_max = -INFINITY;
      for (int64_t i = 0; i < n; ++i) row_max = std::max(row_max, double(load(row[i])));
      double total = 0;
      for (int64_t i = 0; i < n; ++i) total += std::exp(double(load(row[i])) - row_max);
      double log_total = std::log(total);
      for (int64_t i = 0; i < n; ++i) {
        double shifted = double(load(row[i])) - row_max;
        out[r * n + i] = store<T>(log ? shifted - log_total : std::exp(shifted) / total);
      }
    }
  });
}

void softmax_backward(const Tensor& y, const Tensor& dy, bool log, Tensor& dx) {
  int64_t n = y.dim() == 0 ? 1 : y.size(-1);
  int64_t rows = n == 0 ? 0 : y.numel() / n;
  visit_float(y.dtype(), "softmax_backward", [&]<class T>() {
    const T* py = y.data<T>();
    const T* pdy = dy.data<T>();
    T* pdx = dx.data<T>();
#pragma omp parallel for if (rows > 16)
    for (int64_t r = 0; r < rows; ++r) {
      double dot = 0;  // log: sum(dy); softmax: sum(dy * y)
      for (int64_t i = 0; i < n; ++i) {
        double g = double(load(pdy[r * n + i]));
        dot += log ? g : g * double(load(py[r * n + i]));
      }
      for (int64_t i = 0; i < n; ++i) {
        double yi = double(load(py[r * n + i]));
        double g = double(load(pdy[r * n + i]));
        pdx[r * n + i] = store<T>(log ? g - std::exp(yi) * dot : yi * (g - dot));
      }
    }
  });
}

}  // namespace infllm::cpu
