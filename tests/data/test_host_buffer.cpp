#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>

#include "data/host_buffer.h"
#include "data/loader.h"
#include "test_util.h"

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

TEST(HostBuffer, PinnedMemoryFallsBackToPlainMemoryWithoutAGpu) {
  if (cuda_gpu_present()) GTEST_SKIP() << "a CUDA GPU is present: pinned memory is real";
  HostBuffer buffer(1000, true);
  EXPECT_FALSE(buffer.pinned());
}

}  // namespace
}  // namespace infllm::data
