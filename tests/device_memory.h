// Raw device memory for the pointer-level kernel tests (tests/layers/kernel_test_support.h,
// tests/optim/test_adamw_kernels.cpp): cudaMalloc'd arrays outside core's pool, copied with
// blocking cudaMemcpy, so a kernel launched on any stream sees them. CMake links the CUDA
// runtime version (device_memory.cpp) or, in a CPU-only build, tests/no_cuda.cpp, whose
// functions throw; the GPU tests skip before reaching them (INFLLM_REQUIRE_GPU).
#pragma once

#include <cstddef>

namespace infllm::testing {

void* device_malloc(size_t bytes);
void device_free(void* pointer);  // never throws: for destructors
void copy_to_device(void* device, const void* host, size_t bytes);
void copy_to_host(void* host, const void* device, size_t bytes);
void device_memset(void* device, int byte, size_t bytes);
// Waits for every kernel launched so far, on any stream.
void device_synchronize();

}  // namespace infllm::testing
