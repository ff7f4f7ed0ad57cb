// CUDA reductions over the middle axis of a contiguous [outer, n, inner] tensor, accumulated in
// f32 and deterministic: every output is combined by the same threads in the same order on
// every run (shuffles and shared memory, no atomics).
#include <cmath>

#include "core/cuda/launch.cuh"
#include "core/kernels/reduce.h"

namespace infllm::cuda {
namespace {

// max, or sum divided by `divisor` (n for mean, 1 for sum).
struct Reduction {
  bool is_max;
  float divisor;

  __device__ float identity() const { return is_max ? -INFINITY : 0.0f; }
  __device__ float operator()(float a, float b) const { return is_max ? fmaxf(a, b) : a + b; }
  __device__ float finish(float acc) const { return is_max ? acc : acc / divisor; }
};

// inner == 1: rows of n contiguous values, kRowThreads threads per row (a warp, or the block).
template <class T, int kRowThreads>
__global__ void reduce_rows_kernel(const T* x, T* out, int64_t rows, int64_t n, Reduction r) {
  int64_t row = blockIdx.x * int64_t(blockDim.x / kRowThreads) + threadIdx.x / kRowThreads;
  if (row >= rows) return;  // whole warps only: a row never spans a partial warp
  int lane = threadIdx.x % kRowThreads;
  const T* in = x + row * n;
  float acc = r.identity();
  for (int64_t i = lane; i < n; i += kRowThreads) acc = r(acc, to_float(in[i]));
  acc = row_reduce<kRowThreads>(acc, r);
  if (lane == 0) out[row] = from_float<T>(r.finish(acc));
}

constexpr int kColumns = 32;  // adjacent inner positions per block: coalesced loads
constexpr int kSlices = 8;    // threads splitting the n axis of each column

// inner > 1: a block owns kColumns adjacent outputs of one outer index; thread (c, s) folds
// rows s, s + kSlices, ... of column c, then thread (c, 0) folds the kSlices partials in order.
template <class T>
__global__ void reduce_columns_kernel(const T* x, T* out, int64_t n, int64_t inner, Reduction r) {
  __shared__ float partial[kSlices][kColumns + 1];
  int64_t tiles = (inner + kColumns - 1) / kColumns;
  int64_t a = blockIdx.x / tiles;
  int64_t c = (blockIdx.x % tiles) * kColumns + threadIdx.x;
  float acc = r.identity();
  if (c < inner) {
    const T* column = x + a * n * inner + c;
    for (int64_t i = threadIdx.y; i < n; i += kSlices) acc = r(acc, to_float(column[i * inner]));
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < inner) {
    for (int s = 1; s < kSlices; ++s) acc = r(acc, partial[s][threadIdx.x]);
    out[a * inner + c] = from_float<T>(r.finish(acc));
  }
}

}  // namespace

void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner, Tensor& out) {
  INFLLM_CHECK(x.is_contiguous() && out.is_contiguous() && x.numel() == outer * n * inner &&
                   out.numel() == outer * inner && x.dtype() == out.dtype(),
               "reduce on CUDA: expected contiguous x [", outer, ", ", n, ", ", inner,
               "] and out [", outer, ", ", inner, "] of one dtype, got ", x.str(), " and ",
               out.str());
  if (outer * inner == 0) return;
  Reduction r{op == ReduceOp::max, op == ReduceOp::mean ? float(n) : 1.0f};
  DeviceScope scope(x.device());
  visit_cuda_float(x.dtype(), "reduce", [&]<class T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
    if (inner > 1) {
      INFLLM_CHECK(outer * ((inner + kColumns - 1) / kColumns) < (int64_t(1) << 31),
                   "reduce on CUDA: too many outputs in ", out.str());
      unsigned blocks = unsigned(outer * ((inner + kColumns - 1) / kColumns));
      reduce_columns_kernel<T>
          <<<blocks, dim3(kColumns, kSlices), 0, scope.stream()>>>(in, o, n, inner, r);
    } else if (n <= 1024) {
      constexpr int rows_per_block = kThreads / 32;
      unsigned blocks = unsigned((outer + rows_per_block - 1) / rows_per_block);
      reduce_rows_kernel<T, 32><<<blocks, kThreads, 0, scope.stream()>>>(in, o, outer, n, r);
    } else {
      reduce_rows_kernel<T, 512><<<unsigned(outer), 512, 0, scope.stream()>>>(in, o, outer, n, r);
    }
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace infllm::cuda
