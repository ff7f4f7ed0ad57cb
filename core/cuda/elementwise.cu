// CUDA elementwise kernels (same formulas as core/cpu/elementwise.cpp, in f32 arithmetic).
// One map kernel in two shapes: contiguous operands move 16 bytes per access; any other layout
// (transposed views, slices, stride-0 broadcasts, a strided destination) maps each linear index
// to per-operand offsets through the shared shape, whose mergeable dims were collapsed first.
#include <array>

#include "core/cuda/launch.cuh"
#include "core/kernels/elementwise.h"

namespace infllm::cuda {
namespace {

constexpr int kMaxDims = 8;

template <UnaryOp op>
__device__ __forceinline__ float unary_math(float x) {
  constexpr float gelu_c = 0.7978845608028654f;  // sqrt(2/pi)
  if constexpr (op == UnaryOp::neg) {
    return -x;
  } else if constexpr (op == UnaryOp::exp) {
    return expf(x);
  } else if constexpr (op == UnaryOp::log) {
    return logf(x);
  } else if constexpr (op == UnaryOp::sqrt) {
    return sqrtf(x);
  } else if constexpr (op == UnaryOp::rsqrt) {
    return 1.0f / sqrtf(x);
  } else if constexpr (op == UnaryOp::sigmoid) {
    return 1.0f / (1.0f + expf(-x));
  } else if constexpr (op == UnaryOp::silu) {
    return x / (1.0f + expf(-x));
  } else if constexpr (op == UnaryOp::silu_grad) {
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
  } else if constexpr (op == UnaryOp::gelu) {
    return 0.5f * x * (1.0f + tanhf(gelu_c * (x + 0.044715f * x * x * x)));
  } else if constexpr (op == UnaryOp::gelu_grad) {
    float t = tanhf(gelu_c * (x + 0.044715f * x * x * x));
    float du = gelu_c * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
  } else {
    static_assert(op == UnaryOp::square);
    return x * x;
  }
}

template <BinaryOp op>
__device__ __forceinline__ float binary_math(float a, float b) {
  if constexpr (op == BinaryOp::add) {
    return a + b;
  } else if constexpr (op == BinaryOp::sub) {
    return a - b;
  } else if constexpr (op == BinaryOp::mul) {
    return a * b;
  } else {
    static_assert(op == BinaryOp::div);
    return a / b;
  }
}

// Element functors: typed values in, typed value out.
template <UnaryOp op>
struct UnaryFn {
  template <class T>
  __device__ T operator()(T x) const {
    return from_float<T>(unary_math<op>(to_float(x)));
  }
};

template <BinaryOp op>
struct BinaryFn {
  template <class T>
  __device__ T operator()(T a, T b) const {
    return from_float<T>(binary_math<op>(to_float(a), to_float(b)));
  }
};

template <BinaryOp op>
struct ScalarFn {
  float scalar;
  template <class T>
  __device__ T operator()(T a) const {
    return from_float<T>(binary_math<op>(to_float(a), scalar));
  }
};

template <class To>
struct CastFn {
  template <class From>
  __device__ To operator()(From x) const {
    return from_double<To>(to_double(x));
  }
};

struct CopyFn {
  template <class T>
  __device__ T operator()(T x) const {
    return x;
  }
};

template <class In, int kIn>
struct Inputs {
  const In* ptr[kIn];
};

template <class Fn, class In, int kIn, class Vals>
__device__ __forceinline__ auto apply(const Fn& fn, const Vals& x, int j) {
  if constexpr (kIn == 1) {
    return fn(x[0].v[j]);
  } else {
    return fn(x[0].v[j], x[1].v[j]);
  }
}

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements per 16-byte access of the wider of the two types.
template <class Out, class In>
constexpr int kVec = 16 / (sizeof(In) > sizeof(Out) ? sizeof(In) : sizeof(Out));

// out[i] = fn(in_k[i]...) over contiguous, 16-byte aligned operands: whole packs first, then
// the tail of fewer than kVec elements.
template <class Out, class In, int kIn, class Fn>
__global__ void map_contiguous_kernel(Out* out, Inputs<In, kIn> in, int64_t n, Fn fn) {
  constexpr int vec = kVec<Out, In>;
  using InPack = Pack<In, vec>;
  using OutPack = Pack<Out, vec>;
  int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = first; p < n / vec; p += stride) {
    InPack x[kIn];
#pragma unroll
    for (int k = 0; k < kIn; ++k) x[k] = reinterpret_cast<const InPack*>(in.ptr[k])[p];
    OutPack y;
#pragma unroll
    for (int j = 0; j < vec; ++j) y.v[j] = apply<Fn, In, kIn>(fn, x, j);
    reinterpret_cast<OutPack*>(out)[p] = y;
  }
  for (int64_t i = n / vec * vec + first; i < n; i += stride) {
    Pack<In, 1> x[kIn];
#pragma unroll
    for (int k = 0; k < kIn; ++k) x[k].v[0] = in.ptr[k][i];
    out[i] = apply<Fn, In, kIn>(fn, x, 0);
  }
}

// The operands' common shape, innermost dim first, and each operand's strides over it
// (operand 0 is the output). Size-1 dims are dropped and neighbours merged where every operand
// is contiguous across them, so a typical view needs 2-3 divisions per element.
template <int kOperands>
struct Layout {
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t strides[kOperands][kMaxDims];

  __device__ void offsets(int64_t linear, int64_t (&off)[kOperands]) const {
#pragma unroll
    for (int k = 0; k < kOperands; ++k) off[k] = 0;
#pragma unroll
    for (int d = 0; d < kMaxDims; ++d) {
      if (d < ndim) {
        int64_t coord = linear % shape[d];
        linear /= shape[d];
#pragma unroll
        for (int k = 0; k < kOperands; ++k) off[k] += coord * strides[k][d];
      }
    }
  }
};

template <int kOperands>
Layout<kOperands> make_layout(const char* op,
                              const std::array<const Tensor*, kOperands>& operands) {
  const Shape& shape = operands[0]->shape();
  Layout<kOperands> layout;
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
    if (shape[d] == 1) continue;
    int inner = layout.ndim - 1;
    bool merge = inner >= 0;
    for (int k = 0; k < kOperands && merge; ++k) {
      merge = operands[k]->strides()[d] == layout.strides[k][inner] * layout.shape[inner];
    }
    if (merge) {
      layout.shape[inner] *= shape[d];
      continue;
    }
    INFLLM_CHECK(layout.ndim < kMaxDims, op, " on CUDA: more than ", kMaxDims,
                 " non-mergeable dims in shape ", shape_str(shape), " (call contiguous() first)");
    layout.shape[layout.ndim] = shape[d];
    for (int k = 0; k < kOperands; ++k) layout.strides[k][layout.ndim] = operands[k]->strides()[d];
    ++layout.ndim;
  }
  return layout;
}

template <class Out, class In, int kIn, class Fn>
__global__ void map_strided_kernel(Out* out, Inputs<In, kIn> in, Layout<kIn + 1> layout, int64_t n,
                                   Fn fn) {
  int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    int64_t off[kIn + 1];
    layout.offsets(i, off);
    Pack<In, 1> x[kIn];
#pragma unroll
    for (int k = 0; k < kIn; ++k) x[k].v[0] = in.ptr[k][off[k + 1]];
    out[off[0]] = apply<Fn, In, kIn>(fn, x, 0);
  }
}

bool aligned16(const void* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
}

// out = fn(inputs...) elementwise; every input has out's shape (broadcasts are stride-0 views).
template <class Out, class In, int kIn, class Fn>
void map(const char* op, const Tensor& out, const std::array<const Tensor*, kIn>& inputs, Fn fn) {
  bool contiguous = out.is_contiguous() && aligned16(out.data_ptr());
  Inputs<In, kIn> in;
  for (int k = 0; k < kIn; ++k) {
    const Tensor& x = *inputs[k];
    INFLLM_CHECK(x.shape() == out.shape() && x.device() == out.device(), op, " on CUDA: operand ",
                 x.str(), " does not match the output ", out.str());
    in.ptr[k] = static_cast<const In*>(x.data_ptr());
    contiguous = contiguous && x.is_contiguous() && aligned16(in.ptr[k]);
  }
  int64_t n = out.numel();
  if (n == 0) return;
  DeviceScope scope(out.device());
  Out* o = static_cast<Out*>(out.data_ptr());
  if (contiguous) {
    map_contiguous_kernel<Out, In, kIn>
        <<<grid_for(n / kVec<Out, In> + 1), kThreads, 0, scope.stream()>>>(o, in, n, fn);
  } else {
    std::array<const Tensor*, kIn + 1> operands;
    operands[0] = &out;
    for (int k = 0; k < kIn; ++k) operands[k + 1] = inputs[k];
    map_strided_kernel<Out, In, kIn><<<grid_for(n), kThreads, 0, scope.stream()>>>(
        o, in, make_layout<kIn + 1>(op, operands), n, fn);
  }
  CUDA_CHECK_LAUNCH();
}

// Turns the run-time op into a template argument: fn.template operator()<op>().
template <class Fn>
void visit_unary(UnaryOp op, Fn&& fn) {
  switch (op) {
    case UnaryOp::neg:
      return fn.template operator()<UnaryOp::neg>();
    case UnaryOp::exp:
      return fn.template operator()<UnaryOp::exp>();
    case UnaryOp::log:
      return fn.template operator()<UnaryOp::log>();
    case UnaryOp::sqrt:
      return fn.template operator()<UnaryOp::sqrt>();
    case UnaryOp::rsqrt:
      return fn.template operator()<UnaryOp::rsqrt>();
    case UnaryOp::sigmoid:
      return fn.template operator()<UnaryOp::sigmoid>();
    case UnaryOp::silu:
      return fn.template operator()<UnaryOp::silu>();
    case UnaryOp::silu_grad:
      return fn.template operator()<UnaryOp::silu_grad>();
    case UnaryOp::gelu:
      return fn.template operator()<UnaryOp::gelu>();
    case UnaryOp::gelu_grad:
      return fn.template operator()<UnaryOp::gelu_grad>();
    case UnaryOp::square:
      return fn.template operator()<UnaryOp::square>();
  }
}

template <class Fn>
void visit_binary(BinaryOp op, Fn&& fn) {
  switch (op) {
    case BinaryOp::add:
      return fn.template operator()<BinaryOp::add>();
    case BinaryOp::sub:
      return fn.template operator()<BinaryOp::sub>();
    case BinaryOp::mul:
      return fn.template operator()<BinaryOp::mul>();
    case BinaryOp::div:
      return fn.template operator()<BinaryOp::div>();
  }
}

void check_same_dtype(const char* op, const Tensor& x, const Tensor& out) {
  INFLLM_CHECK(x.dtype() == out.dtype(), op, " on CUDA: input ", x.str(), " and output ", out.str(),
               " differ in dtype (cast first)");
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, Tensor& out) {
  const char* name = unary_op_name(op);
  check_same_dtype(name, x, out);
  visit_cuda_float(x.dtype(), name, [&]<class T>() {
    visit_unary(op, [&]<UnaryOp kOp>() { map<T, T, 1>(name, out, {&x}, UnaryFn<kOp>{}); });
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  const char* name = binary_op_name(op);
  check_same_dtype(name, a, out);
  check_same_dtype(name, b, out);
  visit_cuda_float(a.dtype(), name, [&]<class T>() {
    visit_binary(op, [&]<BinaryOp kOp>() { map<T, T, 2>(name, out, {&a, &b}, BinaryFn<kOp>{}); });
  });
}

void binary_scalar(BinaryOp op, const Tensor& a, double scalar, Tensor& out) {
  const char* name = binary_op_name(op);
  check_same_dtype(name, a, out);
  visit_cuda_float(a.dtype(), name, [&]<class T>() {
    visit_binary(
        op, [&]<BinaryOp kOp>() { map<T, T, 1>(name, out, {&a}, ScalarFn<kOp>{float(scalar)}); });
  });
}

void cast(const Tensor& x, Tensor& out) {
  visit_cuda_dtype(x.dtype(), "cast", [&]<class From>() {
    visit_cuda_dtype(out.dtype(), "cast",
                     [&]<class To>() { map<To, From, 1>("cast", out, {&x}, CastFn<To>{}); });
  });
}

// Moves elements by their size, so it serves every dtype (f64 too: no arithmetic happens).
void copy_strided(const Tensor& src, Tensor& dst) {
  check_same_dtype("copy_strided", src, dst);
  INFLLM_CHECK(src.shape() == dst.shape(), "copy_strided on CUDA: source ", src.str(),
               " does not match destination ", dst.str());
  if (src.numel() == 0) return;
  if (src.is_contiguous() && dst.is_contiguous()) {
    DeviceScope scope(dst.device());
    CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), src.nbytes(),
                               cudaMemcpyDeviceToDevice, scope.stream()));
    return;
  }
  auto copy = [&]<class U>() { map<U, U, 1>("copy_strided", dst, {&src}, CopyFn{}); };
  switch (dtype_size(src.dtype())) {
    case 2:
      return copy.template operator()<uint16_t>();
    case 4:
      return copy.template operator()<uint32_t>();
    case 8:
      return copy.template operator()<uint64_t>();
  }
  fail("copy_strided on CUDA: unsupported element size of ", src.str());
}

}  // namespace infllm::cuda
