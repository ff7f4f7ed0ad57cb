// CPU fills. Random draws use the same Philox counters as CUDA (core/rng.h).
#include "core/kernels/fill.h"

#include "core/cpu/strided.h"
#include "core/rng.h"

namespace infllm::cpu {

void fill(Tensor& out, double value) {
  visit_dtype(out.dtype(), [&]<class T>() {
    T v = store<T>(value);
    T* o = out.data<T>();
    for (int64_t i = 0; i < out.numel(); ++i) o[i] = v;
  });
}

void arange(Tensor& out, double start, double step) {
  visit_dtype(out.dtype(), [&]<class T>() {
    T* o = out.data<T>();
    for (int64_t i = 0; i < out.numel(); ++i) o[i] = store<T>(start + step * double(i));
  });
}

void random(Tensor& out, const RandomArgs& args) {
  visit_float(out.dtype(), "random", [&]<class T>() {
    T* o = out.data<T>();
#pragma omp parallel for if (out.numel() > 65536)
    for (int64_t i = 0; i < out.numel(); ++i) {
      uint64_t counter = args.offset + uint64_t(i);
      double draw = args.kind == RandomKind::uniform
                        ? args.a + (args.b - args.a) * double(philox_uniform(counter, args.seed))
                        : args.a + args.b * double(philox_normal(counter, args.seed));
      o[i] = store<T>(float(draw));
    }
  });
}

}  // namespace infllm::cpu
