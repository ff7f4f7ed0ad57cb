// Walks the elements of a strided view in row-major order of its shape, yielding each
// element's offset (in elements) from the view's first element.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace infllm::cpu {

class StridedWalk {
 public:
  explicit StridedWalk(const Tensor& t) : shape_(t.shape()), strides_(t.strides()) {}

  // Offset of element `linear` (row-major over the shape); random access for parallel loops.
  int64_t offset_of(int64_t linear) const {
    int64_t offset = 0;
    for (int64_t d = int64_t(shape_.size()) - 1; d >= 0; --d) {
      offset += (linear % shape_[d]) * strides_[d];
      linear /= shape_[d];
    }
    return offset;
  }

 private:
  Shape shape_;
  Shape strides_;
};

// Calls fn(i, offset) for i in [0, numel) with the element offset of t's i-th element; a
// contiguous tensor takes the plain loop.
template <class Fn>
void for_each_offset(const Tensor& t, Fn&& fn) {
  int64_t n = t.numel();
  if (t.is_contiguous()) {
#pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t i = 0; i < n; ++i) fn(i, i);
    return;
  }
  StridedWalk walk(t);
#pragma omp parallel for if (n > 65536) schedule(static)
  for (int64_t i = 0; i < n; ++i) fn(i, walk.offset_of(i));
}

// Loads any float dtype as float/double and stores back with rounding (bf16 via f32).
template <class T>
inline auto load(const T& x) {
  if constexpr (std::is_same_v<T, bf16>) {
    return bf16_to_float(x);
  } else {
    return x;
  }
}

template <class T, class V>
inline T store(V v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return float_to_bf16(float(v));
  } else {
    return T(v);
  }
}

// Calls fn.template operator()<T>() for the floating-point dtypes the CPU computes in.
template <class Fn>
decltype(auto) visit_float(DType dtype, const char* op, Fn&& fn) {
  INFLLM_CHECK(is_floating(dtype), op, ": expected f32, bf16 or f64, got ", dtype_name(dtype));
  return visit_dtype(dtype, [&]<class T>() {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> ||
                  std::is_same_v<T, bf16>) {
      return fn.template operator()<T>();
    } else {
      return fn.template operator()<float>();  // unreachable: checked above
    }
  });
}

}  // namespace infllm::cpu
