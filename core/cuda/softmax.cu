// CUDA softmax / log-softmax over the rows of a contiguous [rows, n] tensor and their backward,
// in f32. A row belongs to one warp (n <= 1024) or one block of 512 threads (longer rows, e.g.
// the vocabulary axis of the logits).
#include <cmath>

#include "core/cuda/launch.cuh"
#include "core/kernels/softmax.h"

namespace infllm::cuda {
namespace {

constexpr int kLongRowThreads = 512;

// One pass keeps a running (max m, sum of exp(x - m)) per thread; the row then agrees on the max
// M and rescales each thread's sum to it. A second pass writes the outputs.
template <class T, int kRowThreads>
__global__ void softmax_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  int64_t row = blockIdx.x * int64_t(blockDim.x / kRowThreads) + threadIdx.x / kRowThreads;
  if (row >= rows) return;  // whole warps only
  int lane = threadIdx.x % kRowThreads;
  const T* in = x + row * n;
  float m = -INFINITY, s = 0.0f;
  for (int64_t i = lane; i < n; i += kRowThreads) {
    float v = to_float(in[i]);
    if (v > m) {
      s = s * expf(m - v) + 1.0f;
      m = v;
    } else if (m != -INFINITY) {  // both -inf: the term is exp(-inf) = 0, not exp(nan)
      s += expf(v - m);
    }
  }
  float row_max = row_reduce<kRowThreads>(m, MaxOp{});
  float scaled = m == -INFINITY ? 0.0f : s * expf(m - row_max);
  float total = row_reduce<kRowThreads>(scaled, SumOp{});
  float log_total = logf(total);
  T* out = y + row * n;
  for (int64_t i = lane; i < n; i += kRowThreads) {
    float shifted = to_float(in[i]) - row_max;
    out[i] = from_float<T>(log ? shifted - log_total : expf(shifted) / total);
  }
}

// softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy).
template <class T, int kRowThreads>
__global__ void softmax_backward_kernel(const T* y, const T* dy, T* dx, int64_t rows, int64_t n,
                                        bool log) {
  int64_t row = blockIdx.x * int64_t(blockDim.x / kRowThreads) + threadIdx.x / kRowThreads;
  if (row >= rows) return;
  int lane = threadIdx.x % kRowThreads;
  const T* yr = y + row * n;
  const T* dyr = dy + row * n;
  float dot = 0.0f;
  for (int64_t i = lane; i < n; i += kRowThreads) {
    float g = to_float(dyr[i]);
    dot += log ? g : g * to_float(yr[i]);
  }
  dot = row_reduce<kRowThreads>(dot, SumOp{});
  T* out = dx + row * n;
  for (int64_t i = lane; i < n; i += kRowThreads) {
    float yi = to_float(yr[i]), g = to_float(dyr[i]);
    out[i] = from_float<T>(log ? g - expf(yi) * dot : yi * (g - dot));
  }
}

int64_t row_length(const Tensor& t) {
  return t.dim() == 0 ? 1 : t.size(-1);
}

// Launches kernel<T, threads per row> over the rows of `shape_of`, a warp or a block per row.
template <class Launch>
void launch_rows(const Tensor& shape_of, Launch&& launch) {
  int64_t n = row_length(shape_of);
  int64_t rows = n == 0 ? 0 : shape_of.numel() / n;
  if (rows == 0) return;
  DeviceScope scope(shape_of.device());
  if (n <= 1024) {
    constexpr int rows_per_block = kThreads / 32;
    launch.template operator()<32>(unsigned((rows + rows_per_block - 1) / rows_per_block), kThreads,
                                   scope.stream(), rows, n);
  } else {
    launch.template operator()<kLongRowThreads>(unsigned(rows), kLongRowThreads, scope.stream(),
                                                rows, n);
  }
  CUDA_CHECK_LAUNCH();
}

void check_rows(const char* op, const Tensor& a, const Tensor& b) {
  INFLLM_CHECK(a.is_contiguous() && b.is_contiguous() && a.shape() == b.shape() &&
                   a.dtype() == b.dtype() && a.device() == b.device(),
               op, " on CUDA: expected contiguous tensors of one shape, dtype and device, got ",
               a.str(), " and ", b.str());
}

}  // namespace

void softmax(const Tensor& x, bool log, Tensor& y) {
  check_rows("softmax", x, y);
  visit_cuda_float(x.dtype(), "softmax", [&]<class T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* out = static_cast<T*>(y.data_ptr());
    launch_rows(x, [&]<int kRowThreads>(unsigned blocks, int threads, cudaStream_t stream,
                                        int64_t rows, int64_t n) {
      softmax_kernel<T, kRowThreads><<<blocks, threads, 0, stream>>>(in, out, rows, n, log);
    });
  });
}

void softmax_backward(const Tensor& y, const Tensor& dy, bool log, Tensor& dx) {
  check_rows("softmax_backward", y, dy);
  check_rows("softmax_backward", y, dx);
  visit_cuda_float(y.dtype(), "softmax_backward", [&]<class T>() {
    const T* py = static_cast<const T*>(y.data_ptr());
    const T* pdy = static_cast<const T*>(dy.data_ptr());
    T* pdx = static_cast<T*>(dx.data_ptr());
    launch_rows(y, [&]<int kRowThreads>(unsigned blocks, int threads, cudaStream_t stream,
                                        int64_t rows, int64_t n) {
      softmax_backward_kernel<T, kRowThreads>
          <<<blocks, threads, 0, stream>>>(py, pdy, pdx, rows, n, log);
    });
  });
}

}  // namespace infllm::cuda
