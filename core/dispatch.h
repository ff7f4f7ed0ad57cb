// The one place where a kernel call picks its backend: the device of the output tensor decides.
// In a CPU-only build a CUDA tensor cannot exist (allocation refuses it), so only cpu:: is
// referenced and no CUDA symbol is needed at link time.
#pragma once

#include "core/device.h"

#if INFLLM_WITH_CUDA
#define INFLLM_DISPATCH(device, kernel, ...) \
  ((device).is_cuda() ? ::infllm::cuda::kernel(__VA_ARGS__) : ::infllm::cpu::kernel(__VA_ARGS__))
#else
#define INFLLM_DISPATCH(device, kernel, ...) \
  (::infllm::require_device((device), #kernel), ::infllm::cpu::kernel(__VA_ARGS__))
#endif
