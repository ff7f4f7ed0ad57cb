// CUDA fills of a contiguous tensor. Values are computed exactly as core/cpu/fill.cpp does, in
// f64 with explicitly rounded operations (__dadd_rn / __dmul_rn never fuse into an FMA, which
// the host does not use either), so the CPU and the GPU produce bitwise identical tensors.
#include "core/cuda/launch.cuh"
#include "core/kernels/fill.h"
#include "core/rng.h"

namespace infllm::cuda {
namespace {

// out[i] = value_of(i), converted from f64 to T; a grid-stride loop over the elements.
template <class T, class ValueOf>
__global__ void fill_kernel(T* out, int64_t n, ValueOf value_of) {
  int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    out[i] = value_of.template operator()<T>(i);
  }
}

struct Constant {
  double value;
  template <class T>
  __device__ T operator()(int64_t) const {
    return from_double<T>(value);
  }
};

struct Range {
  double start, step;
  template <class T>
  __device__ T operator()(int64_t i) const {
    return from_double<T>(__dadd_rn(start, __dmul_rn(step, double(i))));
  }
};

// Element i draws from Philox counter offset + i; the draw is rounded to f32 first (as the CPU
// does), then to T.
struct Random {
  RandomArgs args;
  template <class T>
  __device__ T operator()(int64_t i) const {
    uint64_t counter = args.offset + uint64_t(i);
    double draw =
        args.kind == RandomKind::uniform
            ? __dadd_rn(args.a,
                        __dmul_rn(args.b - args.a, double(philox_uniform(counter, args.seed))))
            : __dadd_rn(args.a, __dmul_rn(args.b, double(philox_normal(counter, args.seed))));
    return from_float<T>(float(draw));
  }
};

template <class T, class ValueOf>
void launch_fill(const Tensor& out, ValueOf value_of, const char* op) {
  INFLLM_CHECK(out.is_contiguous(), op, " on CUDA: needs a contiguous tensor, got ", out.str());
  int64_t n = out.numel();
  if (n == 0) return;
  DeviceScope scope(out.device());
  fill_kernel<T>
      <<<grid_for(n), kThreads, 0, scope.stream()>>>(static_cast<T*>(out.data_ptr()), n, value_of);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void fill(Tensor& out, double value) {
  visit_cuda_dtype(out.dtype(), "fill",
                   [&]<class T>() { launch_fill<T>(out, Constant{value}, "fill"); });
}

void arange(Tensor& out, double start, double step) {
  visit_cuda_dtype(out.dtype(), "arange", [&]<class T>() {
    launch_fill<T>(out, Range{start, step}, "arange");
  });
}

void random(Tensor& out, const RandomArgs& args) {
  visit_cuda_float(out.dtype(), "random",
                   [&]<class T>() { launch_fill<T>(out, Random{args}, "random"); });
}

}  // namespace infllm::cuda
