#include "data/host_buffer.h"

#include <cstdlib>
#include <utility>

#include "core/error.h"

#if INFLLM_WITH_CUDA
#include "core/cuda_check.h"
#endif

namespace infllm::data {

bool cuda_gpu_present() {
#if INFLLM_WITH_CUDA
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear it, so no later launch check reports this probe
    return false;
  }
  return count > 0;
#else
  return false;
#endif
}

HostBuffer::HostBuffer(size_t bytes, bool want_pinned) : bytes_(bytes) {
  if (bytes == 0) return;
#if INFLLM_WITH_CUDA
  if (want_pinned && cuda_gpu_present()) {
    CUDA_CHECK(cudaHostAlloc(&data_, bytes, cudaHostAllocDefault));
    pinned_ = true;
    return;
  }
#endif
  constexpr size_t kAlignment = 64;
  data_ = std::aligned_alloc(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  INFLLM_CHECK(data_ != nullptr, "host buffer: out of host memory allocating ", bytes,
               " bytes; lower data.batch_size or data.seq_len, or the prefetch depth");
}

HostBuffer::~HostBuffer() {
  release();
}

HostBuffer::HostBuffer(HostBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      pinned_(std::exchange(other.pinned_, false)) {}

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    pinned_ = std::exchange(other.pinned_, false);
  }
  return *this;
}

void HostBuffer::release() {
  if (data_ == nullptr) return;
#if INFLLM_WITH_CUDA
  if (pinned_) {
    cudaFreeHost(data_);  // no throw from a destructor; a failure here leaks at most this buffer
    data_ = nullptr;
    return;
  }
#endif
  std::free(data_);
  data_ = nullptr;
}

}  // namespace infllm::data
