// host_buffer.h's CUDA side: GPU detection and page-locked memory from the CUDA runtime.
#include "core/cuda_check.h"
#include "data/host_buffer.h"

namespace infllm::data {

bool cuda_gpu_present() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear it, so no later launch check reports this probe
    return false;
  }
  return count > 0;
}

void* pinned_host_alloc(size_t bytes) {
  void* data = nullptr;
  CUDA_CHECK(cudaHostAlloc(&data, bytes, cudaHostAllocDefault));
  return data;
}

void pinned_host_free(void* data) {
  cudaFreeHost(data);  // no throw from a destructor; a failure here leaks at most this buffer
}

}  // namespace infllm::data
