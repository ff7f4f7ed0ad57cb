// Times InfLLM-V2 stage 1 (compress + block scores + top-k block lists) on MiniCPM4-8B's attention
// shape (B=1, Hq=32, Hkv=2, D=128, default sparse_config) at 16K-128K tokens, and measures how
// often its block choices agree with the f64 CPU reference on random bf16 activations.
// Prints one JSON line per measurement, then a table. Median of CUDA-event-timed runs.
//   bench_select [--time 16384,32768,65536,131072] [--agree 16384,32768] [--hq 32 --hkv 2
//                --d 128] [--reps 10] [--lse-stride 1,4]  (a list of "0" skips that measurement)
// Every measurement runs once per --lse-stride (SparseConfig::lse_stride: 1 = exact normalizer).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attention/infllm_v2.h"
#include "bench/bench_options.h"
#include "core/bf16.h"
#include "core/cuda_check.h"

using namespace infllm::attention;

namespace {

struct Options {
  std::vector<int> time = {16384, 32768, 65536, 131072};
  std::vector<int> agree = {16384, 32768};
  std::vector<int> lse_strides = {1};
  int hq = 32, hkv = 2, d = 128, reps = 10;
};

// Standard normal bf16 values (Box-Muller on a counter hash), generated on the device.
__global__ void fill_normal(uint16_t* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 0x9E3779B1u ^ seed ^ uint32_t(i >> 32) * 0x85EBCA77u;
    h = (h ^ (h >> 16)) * 0x7FEB352Du;
    h = (h ^ (h >> 15)) * 0x846CA68Bu;
    const uint32_t h2 = (h ^ (h >> 16)) * 0x2C1B3C6Du;
    const float u1 = (float(h >> 8) + 1.f) / 16777217.f, u2 = float(h2 >> 8) / 16777216.f;
    const float z = sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
    x[i] = uint16_t(__float_as_uint(z) >> 16);
  }
}

// Useful MMA work of both passes: 2 x (2 * D) flops per (token, head, causal kernel).
double stage1_flops(const SparseConfig& cfg, const AttentionShape& s) {
  double pairs = 0;
  for (int t = 0; t < s.T; ++t) pairs += num_kernels(cfg, t + 1);
  return 2.0 * 2.0 * s.D * s.Hq * s.B * pairs;
}

double time_stage1(const SparseConfig& cfg, const AttentionShape& s, int reps) {
  const size_t nq = size_t(s.B) * s.T * s.Hq * s.D, nk = size_t(s.B) * s.T * s.Hkv * s.D;
  uint16_t *q, *k;
  int32_t* blocks;
  void* workspace;
  CUDA_CHECK(cudaMalloc(&q, nq * 2));
  CUDA_CHECK(cudaMalloc(&k, nk * 2));
  CUDA_CHECK(cudaMalloc(&blocks, size_t(s.B) * s.T * s.Hkv * cfg.topk * 4));
  CUDA_CHECK(cudaMalloc(&workspace, cuda::select_blocks_workspace_bytes(cfg, s)));
  fill_normal<<<1024, 256>>>(q, nq, 1234u);
  fill_normal<<<1024, 256>>>(k, nk, 5678u);
  CUDA_CHECK_LAUNCH();
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int rep = -2; rep < reps; ++rep) {  // two warm-up runs
    CUDA_CHECK(cudaEventRecord(start));
    cuda::select_blocks(cfg, s, q, k, blocks, nullptr, workspace);
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    if (rep >= 0) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  CUDA_CHECK(cudaFree(q));
  CUDA_CHECK(cudaFree(k));
  CUDA_CHECK(cudaFree(blocks));
  CUDA_CHECK(cudaFree(workspace));
  return ms[ms.size() / 2];
}

// Agreement of the CUDA block lists with the CPU reference on the same bf16 activations.
double measure_agreement(const SparseConfig& cfg, const AttentionShape& s) {
  std::mt19937_64 gen(std::random_device{}());
  std::normal_distribution<float> normal;
  auto draw = [&](size_t n, std::vector<float>& x, std::vector<uint16_t>& bits) {
    x.resize(n);
    bits.resize(n);
    for (size_t i = 0; i < n; ++i) {
      bits[i] = infllm::float_to_bf16(normal(gen)).bits;
      x[i] = infllm::bf16_to_float(infllm::bf16{bits[i]});
    }
  };
  std::vector<float> q, k;
  std::vector<uint16_t> qbits, kbits;
  draw(size_t(s.B) * s.T * s.Hq * s.D, q, qbits);
  draw(size_t(s.B) * s.T * s.Hkv * s.D, k, kbits);
  const size_t n_lists = size_t(s.B) * s.T * s.Hkv * cfg.topk;
  std::vector<int32_t> ref(n_lists), out(n_lists);
  cpu::select_blocks(cfg, s, q.data(), k.data(), ref.data());
  uint16_t *dq, *dk;
  int32_t* dblocks;
  CUDA_CHECK(cudaMalloc(&dq, qbits.size() * 2));
  CUDA_CHECK(cudaMalloc(&dk, kbits.size() * 2));
  CUDA_CHECK(cudaMalloc(&dblocks, n_lists * 4));
  CUDA_CHECK(cudaMemcpy(dq, qbits.data(), qbits.size() * 2, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dk, kbits.data(), kbits.size() * 2, cudaMemcpyHostToDevice));
  cuda::select_blocks(cfg, s, dq, dk, dblocks, nullptr, nullptr);
  CUDA_CHECK(cudaMemcpy(out.data(), dblocks, n_lists * 4, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaFree(dq));
  CUDA_CHECK(cudaFree(dk));
  CUDA_CHECK(cudaFree(dblocks));
  return block_agreement(out.data(), ref.data(), size_t(s.B) * s.T * s.Hkv, cfg.topk);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  using namespace infllm::bench;
  if (!parse_options(argc, argv, "bench_select",
                     {{"--time", list_option(o.time)},
                      {"--agree", list_option(o.agree)},
                      {"--hq", int_option(o.hq)},
                      {"--hkv", int_option(o.hkv)},
                      {"--d", int_option(o.d)},
                      {"--reps", int_option(o.reps)},
                      {"--lse-stride", list_option(o.lse_strides)}}))
    return 2;
  auto shape = [&](int T) {
    return AttentionShape{1, T, o.hq, o.hkv, o.d, float(1.0 / std::sqrt(double(o.d)))};
  };
  std::vector<std::string> table;
  char line[256];
  for (int lse_stride : o.lse_strides) {
    SparseConfig cfg;  // MiniCPM4 sparse_config defaults
    cfg.lse_stride = lse_stride;
    for (int T : o.time) {
      const AttentionShape s = shape(T);
      const double ms = time_stage1(cfg, s, o.reps);
      // Exact-normalizer MMA work: a sampled normalizer does less, so this reads as "effective".
      const double tflops = stage1_flops(cfg, s) / (ms * 1e-3) / 1e12;
      const double ws_mib = cuda::select_blocks_workspace_bytes(cfg, s) / 1048576.0;
      std::printf(
          "{\"bench\":\"select\",\"T\":%d,\"Hq\":%d,\"Hkv\":%d,\"D\":%d,\"lse_stride\":%d,"
          "\"ms\":%.3f,\"mma_tflops\":%.1f,\"workspace_mib\":%.1f}\n",
          T, o.hq, o.hkv, o.d, lse_stride, ms, tflops, ws_mib);
      std::snprintf(line, sizeof line,
                    "stage1  T=%-7d lse_stride %d %9.3f ms  %6.1f TFLOP/s  workspace %7.1f MiB", T,
                    lse_stride, ms, tflops, ws_mib);
      table.push_back(line);
    }
    for (int T : o.agree) {
      const double agreement = measure_agreement(cfg, shape(T));
      std::printf(
          "{\"bench\":\"select_agreement\",\"T\":%d,\"lse_stride\":%d,\"agreement\":%.6f}\n", T,
          lse_stride, agreement);
      std::snprintf(line, sizeof line,
                    "agree   T=%-7d lse_stride %d %9.5f of block choices equal to the CPU f64", T,
                    lse_stride, agreement);
      table.push_back(line);
    }
  }
  std::printf("\nInfLLM-V2 stage 1, B=1 Hq=%d Hkv=%d D=%d, kernel 32/16, block 64, topk 64\n", o.hq,
              o.hkv, o.d);
  for (const std::string& row : table) std::printf("%s\n", row.c_str());
  return 0;
}
