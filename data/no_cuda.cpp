// host_buffer.h's CUDA side in a CPU-only build: no GPU is present, so no buffer is pinned and
// pinned_host_alloc is never reached (core/no_cuda.h's error if called directly).
#include "core/no_cuda.h"
#include "data/host_buffer.h"

namespace infllm::data {

bool cuda_gpu_present() {
  return false;
}

void* pinned_host_alloc(size_t) {
  no_cuda_backend("data::pinned_host_alloc");
}

void pinned_host_free(void*) {}  // nothing is pinned without CUDA, so nothing comes here

}  // namespace infllm::data
