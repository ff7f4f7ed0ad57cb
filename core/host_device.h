// Marks small functions that both the CPU and CUDA kernels call (shared index math, RNG).
#pragma once

#if defined(__CUDACC__)
#define INFLLM_HOST_DEVICE __host__ __device__
#else
#define INFLLM_HOST_DEVICE
#endif
