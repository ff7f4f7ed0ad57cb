// Achieved memory bandwidth of the fused kernels (RMSNorm, RoPE, SwiGLU, cross-entropy, AdamW,
// gradient sum of squares) at realistic sizes, against the device's own copy bandwidth.
// Bytes counted = the fewest the kernel must move: each input read once, each output written
// once. Times: median of kIters event-timed launches after warm-up, on random data.
// Usage: bench_fused (no arguments); prints one table. Built and run by scripts/fused-check;
// docs/benchmarks.md has the figures.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "layers/cross_entropy_kernels.h"
#include "layers/rms_norm_kernels.h"
#include "layers/rope_kernels.h"
#include "layers/swiglu_kernels.h"
#include "optim/adamw_kernels.h"

namespace {

constexpr int kWarmup = 3;
constexpr int kIters = 20;

__device__ uint32_t hash(uint64_t i, uint32_t seed) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull + seed;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return uint32_t(x >> 16);
}

// Uniform in [-scale, scale).
__device__ float uniform(uint64_t i, uint32_t seed, float scale) {
  return (float(hash(i, seed) & 0xFFFFFF) / 8388608.0f - 1.0f) * scale;
}

__global__ void fill_bf16(uint16_t* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float f = uniform(i, seed, scale);
    p[i] = uint16_t(__float_as_uint(f) >> 16);
  }
}

__global__ void fill_f32(float* p, int64_t n, uint32_t seed, float scale, float shift) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    p[i] = uniform(i, seed, scale) + shift;
  }
}

__global__ void fill_targets(int32_t* p, int64_t n, uint32_t seed, int32_t V) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    p[i] = int32_t(hash(i, seed) % uint32_t(V));
  }
}

uint32_t next_seed() {
  static uint32_t seed = 12345;
  return seed += 7919;
}

uint16_t* random_bf16(int64_t n, float scale = 2.0f) {
  uint16_t* p;
  CUDA_CHECK(cudaMalloc(&p, n * 2));
  fill_bf16<<<1024, 256>>>(p, n, next_seed(), scale);
  CUDA_CHECK_LAUNCH();
  return p;
}

float* random_f32(int64_t n, float scale, float shift = 0.0f) {
  float* p;
  CUDA_CHECK(cudaMalloc(&p, n * 4));
  fill_f32<<<1024, 256>>>(p, n, next_seed(), scale, shift);
  CUDA_CHECK_LAUNCH();
  return p;
}

// Median milliseconds of one call of fn.
double median_ms(const std::function<void()>& fn) {
  for (int i = 0; i < kWarmup; ++i) fn();
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms(kIters);
  for (int i = 0; i < kIters; ++i) {
    CUDA_CHECK(cudaEventRecord(start));
    fn();
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK(cudaEventElapsedTime(&ms[i], start, stop));
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[kIters / 2];
}

struct Row {
  std::string kernel, shape;
  double ms, bytes;
};

}  // namespace

int main() {
  using namespace infllm;
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::vector<Row> rows;

  // Copy ceiling: a 1 GiB device-to-device copy, bytes read + written.
  const int64_t copy_bytes = int64_t(1) << 30;
  void *src, *dst;
  CUDA_CHECK(cudaMalloc(&src, copy_bytes));
  CUDA_CHECK(cudaMalloc(&dst, copy_bytes));
  CUDA_CHECK(cudaMemset(src, 1, copy_bytes));
  const double copy_ms = median_ms(
      [&] { CUDA_CHECK(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice)); });
  const double copy_gbs = 2.0 * copy_bytes / copy_ms / 1e6;
  CUDA_CHECK(cudaFree(src));
  CUDA_CHECK(cudaFree(dst));

  {  // RMSNorm, N = 32768 rows of C = 1024.
    const int64_t N = 32768, C = 1024;
    uint16_t *x = random_bf16(N * C), *res = random_bf16(N * C), *w = random_bf16(C, 1.0f),
             *y = random_bf16(N * C), *sum = random_bf16(N * C), *dy = random_bf16(N * C),
             *dx = random_bf16(N * C);
    float *rstd = random_f32(N, 0.1f, 1.0f), *dw = random_f32(C, 1.0f);
    void* ws;
    CUDA_CHECK(cudaMalloc(&ws, rms_norm_backward_cuda_workspace_bytes(N, C)));
    const std::string shape = "N=32768 C=1024";
    const double t = 2.0 * N * C;  // bytes of one bf16 [N, C] tensor
    rows.push_back({"rms_norm fwd", shape,
                    median_ms([&] { rms_norm_forward_cuda(x, w, y, rstd, N, C, 1e-5f, nullptr); }),
                    2 * t + 4.0 * N});
    rows.push_back({"rms_norm+residual fwd", shape, median_ms([&] {
                      rms_norm_residual_forward_cuda(x, res, sum, w, y, rstd, N, C, 1e-5f, nullptr);
                    }),
                    4 * t + 4.0 * N});
    rows.push_back({"rms_norm bwd", shape, median_ms([&] {
                      rms_norm_backward_cuda(dy, x, w, rstd, nullptr, dx, dw, ws, N, C, nullptr);
                    }),
                    3 * t + 4.0 * N + 4.0 * C});
    rows.push_back({"rms_norm bwd +dsum", shape, median_ms([&] {
                      rms_norm_backward_cuda(dy, x, w, rstd, res, dx, dw, ws, N, C, nullptr);
                    }),
                    4 * t + 4.0 * N + 4.0 * C});
    for (void* p : {(void*)x, (void*)res, (void*)w, (void*)y, (void*)sum, (void*)dy, (void*)dx,
                    (void*)rstd, (void*)dw, ws}) {
      CUDA_CHECK(cudaFree(p));
    }
  }
  {  // RoPE on q of [B=4, T=8192, H=16, D=64] (N = 32768 tokens x 1024) and D = 128.
    for (int64_t D : {64, 128}) {
      const int64_t B = 4, T = 8192, H = 1024 / D;
      uint16_t *in = random_bf16(B * T * H * D), *out = random_bf16(B * T * H * D);
      const double t = 2.0 * B * T * H * D;
      const std::string shape = "B=4 T=8192 H=" + std::to_string(H) + " D=" + std::to_string(D);
      rows.push_back({"rope fwd", shape, median_ms([&] {
                        rope_forward_cuda(in, out, B, T, H, D, 10000.0, 0, H, nullptr);
                      }),
                      2 * t});
      rows.push_back({"rope bwd (in place)", shape, median_ms([&] {
                        rope_backward_cuda(out, out, B, T, H, D, 10000.0, 0, H, nullptr);
                      }),
                      2 * t});
      CUDA_CHECK(cudaFree(in));
      CUDA_CHECK(cudaFree(out));
    }
  }
  {  // SwiGLU, N = 32768 rows, F = 2816 (the Llama MLP width for C = 1024).
    const int64_t N = 32768, F = 2816;
    uint16_t *gu = random_bf16(N * 2 * F), *h = random_bf16(N * F), *dgu = random_bf16(N * 2 * F);
    const double t = 2.0 * N * F;
    const std::string shape = "N=32768 F=2816";
    rows.push_back({"swiglu fwd", shape,
                    median_ms([&] { swiglu_forward_cuda(gu, h, N, F, nullptr); }), 3 * t});
    rows.push_back({"swiglu bwd", shape,
                    median_ms([&] { swiglu_backward_cuda(h, gu, dgu, N, F, nullptr); }), 5 * t});
    CUDA_CHECK(cudaFree(gu));
    CUDA_CHECK(cudaFree(h));
    CUDA_CHECK(cudaFree(dgu));
  }
  {  // Cross-entropy, N = 8192 rows.
    for (int64_t V : {32000, 50304}) {
      const int64_t N = 8192;
      uint16_t *logits = random_bf16(N * V, 4.0f), *grad = random_bf16(N * V);
      int32_t* targets;
      float* loss = random_f32(N, 1.0f);
      CUDA_CHECK(cudaMalloc(&targets, N * 4));
      fill_targets<<<64, 256>>>(targets, N, next_seed(), int32_t(V));
      CUDA_CHECK_LAUNCH();
      const double t = 2.0 * N * V;
      const std::string shape = "N=8192 V=" + std::to_string(V);
      rows.push_back({"cross_entropy fwd+bwd", shape, median_ms([&] {
                        cross_entropy_forward_backward_cuda(logits, targets, loss, grad, N, V,
                                                            1.0f / N, nullptr);
                      }),
                      2 * t + 8.0 * N});
      rows.push_back({"cross_entropy loss only", shape, median_ms([&] {
                        cross_entropy_forward_backward_cuda(logits, targets, loss, nullptr, N, V,
                                                            1.0f / N, nullptr);
                      }),
                      t + 8.0 * N});
      CUDA_CHECK(cudaFree(logits));
      CUDA_CHECK(cudaFree(grad));
      CUDA_CHECK(cudaFree(targets));
      CUDA_CHECK(cudaFree(loss));
    }
  }
  {  // AdamW and the gradient norm over a GPT-2-small-sized list: 124M parameters, 75 tensors.
    std::vector<int64_t> sizes = {50304 * 768, 1024 * 768};
    for (int layer = 0; layer < 12; ++layer) {
      for (int64_t n : {int64_t(768), int64_t(768) * 2304, int64_t(768) * 768, int64_t(768),
                        int64_t(768) * 3072, int64_t(3072) * 768}) {
        sizes.push_back(n);
      }
    }
    sizes.push_back(768);
    std::vector<AdamWTensor> tensors;
    std::vector<void*> allocations;
    int64_t total = 0;
    for (int64_t n : sizes) {
      AdamWTensor t;
      t.param = random_f32(n, 0.02f);
      t.exp_avg = random_f32(n, 0.01f);
      t.exp_avg_sq = random_f32(n, 1e-4f, 1e-4f);
      uint16_t* g = random_bf16(n, 1.0f);
      t.grad = g;
      t.grad_is_bf16 = 1;
      CUDA_CHECK(cudaMalloc(&t.param_bf16, n * 2));
      t.n = n;
      t.weight_decay = n > 768 ? 0.1f : 0.0f;
      tensors.push_back(t);
      allocations.insert(allocations.end(), {t.param, t.exp_avg, t.exp_avg_sq, g, t.param_bf16});
      total += n;
    }
    const int64_t chunks = adamw_plan_chunks(tensors.data(), int(tensors.size()));
    AdamWTensor* dev;
    CUDA_CHECK(cudaMalloc(&dev, tensors.size() * sizeof(AdamWTensor)));
    CUDA_CHECK(cudaMemcpy(dev, tensors.data(), tensors.size() * sizeof(AdamWTensor),
                          cudaMemcpyHostToDevice));
    void* ws;
    float* out;
    CUDA_CHECK(cudaMalloc(&ws, grad_sum_squares_cuda_workspace_bytes(chunks)));
    CUDA_CHECK(cudaMalloc(&out, 4));
    const std::string shape = std::to_string(total / 1000000) + "M params, " +
                              std::to_string(tensors.size()) + " tensors";
    int64_t step = 0;
    rows.push_back({"adamw (bf16 grad, +bf16 copy)", shape, median_ms([&] {
                      AdamWHyper hp;
                      hp.step = ++step;
                      adamw_step_cuda(dev, int(tensors.size()), chunks, hp, nullptr);
                    }),
                    30.0 * total});
    rows.push_back({"grad sum of squares (bf16)", shape, median_ms([&] {
                      grad_sum_squares_cuda(dev, int(tensors.size()), chunks, ws, out, nullptr);
                    }),
                    2.0 * total});
    for (void* p : allocations) CUDA_CHECK(cudaFree(p));
    CUDA_CHECK(cudaFree(dev));
    CUDA_CHECK(cudaFree(ws));
    CUDA_CHECK(cudaFree(out));
  }
  CUDA_CHECK(cudaDeviceSynchronize());

  std::printf("\n%s, %d SMs; device-to-device copy of 1 GiB: %.0f GB/s (read + write)\n", prop.name,
              prop.multiProcessorCount, copy_gbs);
  std::printf("%-30s %-30s %10s %10s %8s\n", "kernel", "shape", "time us", "GB/s", "% copy");
  for (const Row& r : rows) {
    const double gbs = r.bytes / r.ms / 1e6;
    std::printf("%-30s %-30s %10.1f %10.0f %7.0f%%\n", r.kernel.c_str(), r.shape.c_str(),
                r.ms * 1e3, gbs, 100.0 * gbs / copy_gbs);
  }
  return 0;
}
