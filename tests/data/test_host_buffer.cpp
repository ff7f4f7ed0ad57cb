#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>

#include "data/host_buffer.h"
#include "data/loader.h"
#include "test_util.h"

#if INFLLM_WITH_CUDA
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#endif

namespace infllm::data {
namespace {

TEST(HostBuffer, PlainMemoryWhenNotAskedToPin) {
  HostBuffer buffer(1000, false);
  EXPECT_FALSE(buffer.pinned());
  EXPECT_EQ(buffer.bytes(), 1000u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer.data()) % 64, 0u);
  HostBuffer moved = std::move(buffer);
  EXPECT_EQ(buffer.data(), nullptr);
  EXPECT_NE(moved.data(), nullptr);
}

#if INFLLM_WITH_CUDA
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

TEST(HostBuffer, LoaderBatchesArePinnedAndUnchanged) {
  if (!cuda_gpu_present()) GTEST_SKIP() << "no CUDA GPU present (cudaGetDeviceCount failed or 0)";
  testing::TempDir dir;
  const std::string path = dir.file("tokens.h5");
  std::vector<uint32_t> tokens(20000);
  std::iota(tokens.begin(), tokens.end(), 0u);
  TokenFileWriter writer(path, {20000, "positions", "test"});
  writer.append_document(tokens);
  writer.close();
  LoaderOptions options;
  options.T = 100;
  options.B = 4;
  options.pinned = true;
  Loader pinned(path, options);
  options.pinned = false;
  Loader plain(path, options);
  for (int step = 0; step < 10; ++step) {
    const Batch a = pinned.next();
    const Batch b = plain.next();
    EXPECT_TRUE(a.pinned);
    EXPECT_FALSE(b.pinned);
    EXPECT_TRUE(std::equal(a.inputs.begin(), a.inputs.end(), b.inputs.begin()));
    EXPECT_TRUE(std::equal(a.targets.begin(), a.targets.end(), b.targets.begin()));
  }
}
#else
TEST(HostBuffer, PinnedMemoryNeedsCuda) {
  HostBuffer buffer(1000, true);
  EXPECT_FALSE(buffer.pinned());
  GTEST_SKIP() << "built without CUDA: pinned memory falls back to plain memory";
}
#endif

}  // namespace
}  // namespace infllm::data
