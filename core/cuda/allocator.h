// Device memory from CUDA's stream-ordered pool. The pool's release threshold is set to "keep
// everything", so freed blocks are reused without returning to the driver (no cudaMalloc
// stalls in the training loop). Usable from plain .cpp files.
#pragma once

#include <cstddef>

namespace infllm::cuda {

// Allocates on the device's current compute stream; throws infllm::Error on out-of-memory with
// the requested size, the bytes in use and the recipe knobs that lower memory.
void* device_alloc(size_t bytes, int device);
void device_free(void* ptr, size_t bytes, int device);
void* pinned_alloc(size_t bytes);
void pinned_free(void* ptr);

struct MemoryStats {
  size_t in_use = 0;    // bytes held by live tensors
  size_t peak = 0;      // high-water mark of in_use since the last reset
  size_t reserved = 0;  // bytes the pool holds from the driver
};
MemoryStats memory_stats(int device);
void reset_peak_memory(int device);

}  // namespace infllm::cuda
