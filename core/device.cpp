#include "core/device.h"

#include "core/error.h"
#if INFLLM_WITH_CUDA
#include <cuda_runtime.h>

#include "core/cuda/stream.h"
#endif

namespace infllm {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

int cuda_device_count() {
#if INFLLM_WITH_CUDA
  // Without a driver this fails ("driver version is insufficient"): that means no GPU.
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
#else
  return 0;
#endif
}

Device best_device() {
  return cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
}

Device parse_device(const std::string& text) {
  if (text == "auto") return best_device();
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    try {
      return Device::cuda(std::stoi(text.substr(5)));
    } catch (const std::exception&) {
    }
  }
  fail("unknown device \"", text, "\": use auto, cpu, cuda or cuda:N");
}

void* device_stream(Device device) {
#if INFLLM_WITH_CUDA
  if (device.is_cuda()) return cuda::compute_stream(device.index);
#endif
  return nullptr;
}

DeviceMemory device_memory(Device device) {
  DeviceMemory memory;
#if INFLLM_WITH_CUDA
  if (device.is_cuda() && device.index < cuda_device_count()) {
    int current = 0;
    if (cudaGetDevice(&current) == cudaSuccess && cudaSetDevice(device.index) == cudaSuccess) {
      if (cudaMemGetInfo(&memory.free_bytes, &memory.total_bytes) != cudaSuccess) memory = {};
      cudaSetDevice(current);
    }
    cudaGetLastError();  // a failure above means "unknown", not a sticky error for later calls
  }
#else
  (void)device;
#endif
  return memory;
}

void require_device(Device device, const char* where) {
  if (device.is_cpu()) return;
#if !INFLLM_WITH_CUDA
  fail(where, ": tensor on ", device.str(),
       " but this build has no CUDA backend (rebuild with nvcc "
       "installed, or use the cpu device)");
#else
  int count = cuda_device_count();
  INFLLM_CHECK(device.index < count, where, ": tensor on ", device.str(), " but only ", count,
               " GPU(s) are visible",
               count == 0 ? " (no GPU or driver found; use the cpu device)" : "");
#endif
}

}  // namespace infllm
