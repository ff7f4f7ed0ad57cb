#include "data/host_buffer.h"

#include <cstdlib>
#include <utility>

#include "core/error.h"

namespace infllm::data {

HostBuffer::HostBuffer(size_t bytes, bool want_pinned) : bytes_(bytes) {
  if (bytes == 0) return;
  if (want_pinned && cuda_gpu_present()) {
    data_ = pinned_host_alloc(bytes);
    pinned_ = true;
    return;
  }
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
  if (pinned_) {
    pinned_host_free(data_);
    data_ = nullptr;
    return;
  }
  std::free(data_);
  data_ = nullptr;
}

}  // namespace infllm::data
