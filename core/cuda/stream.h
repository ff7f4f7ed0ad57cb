// The compute stream of each device. All kernels and pool allocations of a device go on it, so
// stream-ordered frees are safe; other streams (NCCL) synchronize with it through events.
#pragma once

namespace infllm::cuda {

// cudaStream_t of `device`, as void* so plain .cpp files can hold it.
void* compute_stream(int device);
void set_device(int device);
int current_device();
void synchronize(int device);
// Compute capability as major * 10 + minor (90 for an H100, 80 for an A100).
int compute_capability(int device);

}  // namespace infllm::cuda
