// Host memory for batches that go to the GPU: page-locked (cudaHostAlloc) when the build has
// CUDA and a GPU is present, so cudaMemcpyAsync from it is a real asynchronous DMA; otherwise
// plain 64-byte aligned memory.
#pragma once

#include <cstddef>

namespace infllm::data {

class HostBuffer {
 public:
  HostBuffer() = default;
  // want_pinned = false always gives plain memory (CPU training needs no page locking).
  HostBuffer(size_t bytes, bool want_pinned);
  ~HostBuffer();
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  HostBuffer(HostBuffer&& other) noexcept;
  HostBuffer& operator=(HostBuffer&& other) noexcept;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  bool pinned() const { return pinned_; }

 private:
  void release();

  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool pinned_ = false;
};

// The CUDA side of host buffers: data/host_buffer_cuda.cpp, or data/no_cuda.cpp in a CPU-only
// build (no GPU present, nothing pinned).
// True when CUDA is built in and at least one GPU answers (any CUDA error means no GPU).
bool cuda_gpu_present();
// Page-locked memory (cudaHostAlloc), for when cuda_gpu_present(); freed without throwing.
void* pinned_host_alloc(size_t bytes);
void pinned_host_free(void* data);

}  // namespace infllm::data
