// CPU reference of reductions over the middle axis of [outer, n, inner].
#include "core/kernels/reduce.h"

#include <cmath>
#include <limits>

#include "core/cpu/strided.h"

namespace infllm::cpu {

void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner, Tensor& out) {
  visit_float(x.dtype(), "reduce", [&]<class T>() {
    // f64 accumulation keeps the reference exact enough to test the GPU's f32 sums against.
    const T* in = x.data<T>();
    T* o = out.data<T>();
#pragma omp parallel for collapse(2) if (outer * inner > 64)
    for (int64_t a = 0; a < outer; ++a) {
      for (int64_t c = 0; c < inner; ++c) {
        const T* row = in + a * n * inner + c;
        double acc = op == ReduceOp::max ? -std::numeric_limits<double>::infinity() : 0.0;
        for (int64_t i = 0; i < n; ++i) {
          double v = double(load(row[i * inner]));
          acc = op == ReduceOp::max ? std::max(acc, v) : acc + v;
        }
        if (op == ReduceOp::mean) acc /= double(n);
        o[a * inner + c] = store<T>(acc);
      }
    }
  });
}

}  // namespace infllm::cpu
