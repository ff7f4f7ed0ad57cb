// Pinned HostBuffer memory under the CUDA runtime: the driver sees it as host memory and copies
// from it on a stream. Raw CUDA calls, so CMake builds this test only with the CUDA backend
// (tests/data/test_host_buffer.cpp has the backend-neutral cases).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "core/cuda_check.h"
#include "data/host_buffer.h"

namespace infllm::data {
namespace {

TEST(HostBuffer, PinnedMemoryCopiesToTheGpuAsynchronously) {
  if (!cuda_gpu_present()) GTEST_SKIP() << "no CUDA GPU present (cudaGetDeviceCount failed or 0)";
  const size_t count = 1 << 20;
  HostBuffer host(count * sizeof(int32_t), true);
  ASSERT_TRUE(host.pinned());
  cudaPointerAttributes attributes{};
  CUDA_CHECK(cudaPointerGetAttributes(&attributes, host.data()));
  EXPECT_EQ(attributes.type, cudaMemoryTypeHost);
  int32_t* values = static_cast<int32_t*>(host.data());
  std::iota(values, values + count, 7);
  int32_t* device = nullptr;
  CUDA_CHECK(cudaMalloc(&device, count * sizeof(int32_t)));
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  CUDA_CHECK(
      cudaMemcpyAsync(device, values, count * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  std::vector<int32_t> back(count);
  CUDA_CHECK(cudaMemcpyAsync(back.data(), device, count * sizeof(int32_t), cudaMemcpyDeviceToHost,
                             stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  EXPECT_TRUE(std::equal(back.begin(), back.end(), values));
  CUDA_CHECK(cudaStreamDestroy(stream));
  CUDA_CHECK(cudaFree(device));
}

}  // namespace
}  // namespace infllm::data
