#include "core/cuda/allocator.h"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "core/cuda/stream.h"
#include "core/cuda_check.h"

namespace infllm::cuda {
namespace {

struct DeviceCounters {
  std::atomic<size_t> in_use{0};
  std::atomic<size_t> peak{0};
};

DeviceCounters& counters(int device) {
  static DeviceCounters all[64];
  INFLLM_CHECK(device >= 0 && device < 64, "device index out of range: ", device);
  return all[device];
}

// Keeps freed memory cached in the device's default pool instead of trimming it at each sync.
void configure_pool(int device) {
  static std::once_flag flags[64];
  std::call_once(flags[device], [device] {
    cudaMemPool_t pool;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep_all = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all));
  });
}

std::string gib(size_t bytes) {
  return std::to_string(double(bytes) / (1ull << 30)).substr(0, 6) + " GiB";
}

}  // namespace

void* device_alloc(size_t bytes, int device) {
  configure_pool(device);
  void* ptr = nullptr;
  auto stream = static_cast<cudaStream_t>(compute_stream(device));
  cudaError_t err = cudaMallocAsync(&ptr, bytes, stream);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    fail("out of memory on cuda:", device, ": requested ", gib(bytes), ", ",
         gib(counters(device).in_use), " in use by tensors, ", gib(free_bytes), " free of ",
         gib(total),
         ". Lower data.batch_size or data.seq_len, or set "
         "train.activation_checkpointing=true");
  }
  CUDA_CHECK(err);
  auto& c = counters(device);
  size_t now = c.in_use += bytes;
  size_t peak = c.peak.load();
  while (now > peak && !c.peak.compare_exchange_weak(peak, now)) {
  }
  return ptr;
}

void device_free(void* ptr, size_t bytes, int device) {
  if (!ptr) return;
  CUDA_CHECK(cudaFreeAsync(ptr, static_cast<cudaStream_t>(compute_stream(device))));
  counters(device).in_use -= bytes;
}

void* pinned_alloc(size_t bytes) {
  void* ptr = nullptr;
  CUDA_CHECK(cudaHostAlloc(&ptr, bytes, cudaHostAllocDefault));
  return ptr;
}

void pinned_free(void* ptr) {
  if (ptr) CUDA_CHECK(cudaFreeHost(ptr));
}

MemoryStats memory_stats(int device) {
  MemoryStats stats;
  stats.in_use = counters(device).in_use;
  stats.peak = counters(device).peak;
  cudaMemPool_t pool;
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t reserved = 0;
  CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  stats.reserved = reserved;
  return stats;
}

void reset_peak_memory(int device) {
  counters(device).peak = counters(device).in_use.load();
}

}  // namespace infllm::cuda
