// The CPU-only build's tests/device_memory.cpp: the same functions, each an error
// (core/no_cuda.h), so the kernel tests compile their GPU cases in both builds.
#include "core/no_cuda.h"
#include "tests/device_memory.h"

namespace infllm::testing {

void* device_malloc(size_t) {
  no_cuda_backend("testing::device_malloc");
}
void device_free(void*) {}  // nothing was allocated
void copy_to_device(void*, const void*, size_t) {
  no_cuda_backend("testing::copy_to_device");
}
void copy_to_host(void*, const void*, size_t) {
  no_cuda_backend("testing::copy_to_host");
}
void device_memset(void*, int, size_t) {
  no_cuda_backend("testing::device_memset");
}
void device_synchronize() {
  no_cuda_backend("testing::device_synchronize");
}

}  // namespace infllm::testing
