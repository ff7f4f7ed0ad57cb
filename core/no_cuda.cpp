// The CPU-only build's core/cuda/stream.cpp and allocator.cpp: the same entry points, each an
// error (core/no_cuda.h). core's kernels (core/kernels/*.h) need no stubs: INFLLM_DISPATCH
// references their cuda:: twins only in a CUDA build (core/dispatch.h says why).
#include "core/no_cuda.h"
#include "core/cuda/allocator.h"
#include "core/cuda/stream.h"

namespace infllm::cuda {

void* compute_stream(int) {
  no_cuda_backend("cuda::compute_stream");
}
void set_device(int) {
  no_cuda_backend("cuda::set_device");
}
int current_device() {
  no_cuda_backend("cuda::current_device");
}
void synchronize(int) {
  no_cuda_backend("cuda::synchronize");
}
int compute_capability(int) {
  no_cuda_backend("cuda::compute_capability");
}

void* device_alloc(size_t, int) {
  no_cuda_backend("cuda::device_alloc");
}
void device_free(void*, size_t, int) {
  no_cuda_backend("cuda::device_free");
}
void* pinned_alloc(size_t) {
  no_cuda_backend("cuda::pinned_alloc");
}
void pinned_free(void*) {
  no_cuda_backend("cuda::pinned_free");
}
MemoryStats memory_stats(int) {
  no_cuda_backend("cuda::memory_stats");
}
void reset_peak_memory(int) {
  no_cuda_backend("cuda::reset_peak_memory");
}

}  // namespace infllm::cuda
