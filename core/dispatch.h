// The one place where a core kernel call picks its backend: the device of the output tensor
// decides. This #if is part of core's backend seam and stays: every kernel of core/kernels/*.h
// has a cuda:: twin, a CPU-only build compiles none of them, and the macro references cuda:: only
// when they exist (rather than a stub per core kernel). Everything above core calls its own cuda::
// functions directly behind `device.is_cuda()`, and a CPU-only build links each folder's
// no_cuda.cpp stubs instead (cmake/InfllmTargets.cmake). In a CPU-only build a CUDA tensor cannot
// exist (allocation refuses it), so no stub is reached through a tensor.
#pragma once

#include "core/device.h"
#include "core/error.h"

#if INFLLM_WITH_CUDA
#define INFLLM_DISPATCH(device, kernel, ...) \
  ((device).is_cuda() ? ::infllm::cuda::kernel(__VA_ARGS__) : ::infllm::cpu::kernel(__VA_ARGS__))
#else
#define INFLLM_DISPATCH(device, kernel, ...) \
  (::infllm::require_device((device), #kernel), ::infllm::cpu::kernel(__VA_ARGS__))
#endif
