// The one place where a kernel call picks its backend: the device of the output tensor decides.
// In a CPU-only build a CUDA tensor cannot exist (allocation refuses it), so only cpu:: is
// referenced and no CUDA symbol is needed at link time.
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

// Guards a call into a CUDA-only kernel (one without a cpu:: twin under the same name): in a
// CPU-only build the call is replaced by an error, which cannot be reached because no CUDA
// tensor can exist there.
#if INFLLM_WITH_CUDA
#define INFLLM_IF_CUDA(...) __VA_ARGS__
#else
#define INFLLM_IF_CUDA(...) ::infllm::fail("this build has no CUDA backend")
#endif
