// tests/device_memory.h over the CUDA runtime (CUDA builds; tests/no_cuda.cpp stands in without).
#include "tests/device_memory.h"

#include <cuda_runtime.h>

#include "core/cuda_check.h"

namespace infllm::testing {

void* device_malloc(size_t bytes) {
  void* pointer = nullptr;
  CUDA_CHECK(cudaMalloc(&pointer, bytes));
  return pointer;
}

void device_free(void* pointer) {
  cudaFree(pointer);
}

void copy_to_device(void* device, const void* host, size_t bytes) {
  CUDA_CHECK(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice));
}

void copy_to_host(void* host, const void* device, size_t bytes) {
  CUDA_CHECK(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost));
}

void device_memset(void* device, int byte, size_t bytes) {
  CUDA_CHECK(cudaMemset(device, byte, bytes));
}

void device_synchronize() {
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace infllm::testing
