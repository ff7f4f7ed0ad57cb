// Checks for every CUDA runtime call and kernel launch; include only from .cu files and
// CUDA-aware sources.
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

namespace infllm {

[[noreturn]] inline void cuda_fail(cudaError_t err, const char* call, const char* file, int line) {
  fail("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") in ", call, " at ",
       file, ":", line);
}

}  // namespace infllm

#define CUDA_CHECK(call)                                                           \
  do {                                                                             \
    cudaError_t err_ = (call);                                                     \
    if (err_ != cudaSuccess) ::infllm::cuda_fail(err_, #call, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: catches bad launch configurations immediately.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
