// A block of memory on one device. CPU memory is 64-byte aligned (pinned when asked, for fast
// host<->device copies); CUDA memory comes from the stream-ordered pool in core/cuda/allocator.
#pragma once

#include <cstddef>
#include <memory>

#include "core/device.h"

namespace infllm {

class Storage {
 public:
  Storage(size_t bytes, Device device, bool pinned = false);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  bool pinned_ = false;
};

}  // namespace infllm
