// The CPU-only build's stand-in for the CUDA backend. Each folder with CUDA code has a
// no_cuda.cpp that CMake compiles instead of its CUDA sources when nvcc is absent
// (cmake/InfllmTargets.cmake, NO_CUDA_SOURCES): it defines the same cuda:: functions, each one
// throwing this error. Callers pick the backend at run time (`device.is_cuda()`) with no #if; in a
// CPU-only build no CUDA tensor can exist, so the stubs are reached only by a direct call.
#pragma once

#include "core/error.h"

namespace infllm {

[[noreturn]] inline void no_cuda_backend(const char* function) {
  fail(function,
       ": this build has no CUDA backend; rebuild with nvcc present (the CUDA toolkit installed, "
       "cmake without -DINFLLM_CUDA=OFF) to run on a GPU");
}

}  // namespace infllm
