#include "core/storage.h"

#include <cstdlib>

#include "core/cuda/allocator.h"
#include "core/error.h"

namespace infllm {
namespace {

// Whole 64-byte lines, never zero: every tensor gets a distinct, aligned address.
size_t allocation_size(size_t bytes) {
  return bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
}

}  // namespace

Storage::Storage(size_t bytes, Device device, bool pinned)
    : bytes_(bytes), device_(device), pinned_(pinned) {
  require_device(device, "allocate");
  size_t rounded = allocation_size(bytes);
  if (device.is_cuda()) {
    data_ = cuda::device_alloc(rounded, device.index);
    return;
  }
  if (pinned && cuda_device_count() > 0) {
    data_ = cuda::pinned_alloc(rounded);
    return;
  }
  pinned_ = false;
  data_ = std::aligned_alloc(64, rounded);
  INFLLM_CHECK(data_, "out of host memory: requested ", rounded, " bytes");
}

Storage::~Storage() {
  if (device_.is_cuda()) {
    cuda::device_free(data_, allocation_size(bytes_), device_.index);
    return;
  }
  if (pinned_) {
    cuda::pinned_free(data_);
    return;
  }
  std::free(data_);
}

}  // namespace infllm
