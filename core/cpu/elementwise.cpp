// CPU reference of the elementwise kernels: plain formulas in f32 (f64 for f64 tensors).
#include "core/kernels/elementwise.h"

#include <cmath>
#include <cstring>

#include "core/cpu/strided.h"

namespace infllm {

const char* unary_op_name(UnaryOp op) {
  constexpr const char* names[] = {"neg",  "exp",       "log",  "sqrt",      "rsqrt", "sigmoid",
                                   "silu", "silu_grad", "gelu", "gelu_grad", "square"};
  return names[int(op)];
}

const char* binary_op_name(BinaryOp op) {
  constexpr const char* names[] = {"add", "sub", "mul", "div"};
  return names[int(op)];
}

namespace cpu {
namespace {

template <class V>
V apply_unary(UnaryOp op, V x) {
  constexpr V gelu_c = V(0.7978845608028654);  // sqrt(2/pi)
  switch (op) {
    case UnaryOp::neg:
      return -x;
    case UnaryOp::exp:
      return std::exp(x);
    case UnaryOp::log:
      return std::log(x);
    case UnaryOp::sqrt:
      return std::sqrt(x);
    case UnaryOp::rsqrt:
      return V(1) / std::sqrt(x);
    case UnaryOp::sigmoid:
      return V(1) / (V(1) + std::exp(-x));
    case UnaryOp::silu:
      return x / (V(1) + std::exp(-x));
    case UnaryOp::silu_grad: {
      V s = V(1) / (V(1) + std::exp(-x));
      return s * (V(1) + x * (V(1) - s));
    }
    case UnaryOp::gelu:
      return V(0.5) * x * (V(1) + std::tanh(gelu_c * (x + V(0.044715) * x * x * x)));
    case UnaryOp::gelu_grad: {
      V u = gelu_c * (x + V(0.044715) * x * x * x);
      V t = std::tanh(u);
      V du = gelu_c * (V(1) + V(3 * 0.044715) * x * x);
      return V(0.5) * (V(1) + t) + V(0.5) * x * (V(1) - t * t) * du;
    }
    case UnaryOp::square:
      return x * x;
  }
  return x;
}

template <class V>
V apply_binary(BinaryOp op, V a, V b) {
  switch (op) {
    case BinaryOp::add:
      return a + b;
    case BinaryOp::sub:
      return a - b;
    case BinaryOp::mul:
      return a * b;
    case BinaryOp::div:
      return a / b;
  }
  return a;
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, Tensor& out) {
  visit_float(x.dtype(), unary_op_name(op), [&]<class T>() {
    const T* in = x.data<T>();
    T* o = out.data<T>();
    for_each_offset(
        x, [&](int64_t i, int64_t off) { o[i] = store<T>(apply_unary(op, load(in[off]))); });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  visit_float(a.dtype(), binary_op_name(op), [&]<class T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* o = out.data<T>();
    StridedWalk walk_b(b);
    bool b_plain = b.is_contiguous();
    for_each_offset(a, [&](int64_t i, int64_t off) {
      int64_t off_b = b_plain ? i : walk_b.offset_of(i);
      o[i] = store<T>(apply_binary(op, load(pa[off]), load(pb[off_b])));
    });
  });
}

void binary_scalar(BinaryOp op, const Tensor& a, double scalar, Tensor& out) {
  visit_float(a.dtype(), binary_op_name(op), [&]<class T>() {
    using V = decltype(load(T()));
    const T* pa = a.data<T>();
    T* o = out.data<T>();
    for_each_offset(a, [&](int64_t i, int64_t off) {
      o[i] = store<T>(apply_binary(op, load(pa[off]), V(scalar)));
    });
  });
}

void cast(const Tensor& x, Tensor& out) {
  visit_dtype(x.dtype(), [&]<class From>() {
    visit_dtype(out.dtype(), [&]<class To>() {
      const From* in = x.data<From>();
      To* o = out.data<To>();
      for_each_offset(x, [&](int64_t i, int64_t off) { o[i] = store<To>(double(load(in[off]))); });
    });
  });
}

void copy_strided(const Tensor& src, Tensor& dst) {
  size_t size = dtype_size(src.dtype());
  const char* in = static_cast<const char*>(src.data_ptr());
  char* o = static_cast<char*>(dst.data_ptr());
  if (src.is_contiguous() && dst.is_contiguous()) {
    std::memcpy(o, in, src.nbytes());
    return;
  }
  StridedWalk walk_dst(dst);
  bool dst_plain = dst.is_contiguous();
  for_each_offset(src, [&](int64_t i, int64_t off) {
    std::memcpy(o + (dst_plain ? i : walk_dst.offset_of(i)) * size, in + off * size, size);
  });
}

}  // namespace cpu
}  // namespace infllm
