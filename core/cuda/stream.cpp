#include "core/cuda/stream.h"

#include <mutex>
#include <vector>

#include "core/cuda_check.h"

namespace infllm::cuda {

void* compute_stream(int device) {
  static std::mutex mutex;
  static std::vector<cudaStream_t> streams;
  std::lock_guard<std::mutex> lock(mutex);
  if (streams.empty()) {
    int count = 0;
    CUDA_CHECK(cudaGetDeviceCount(&count));
    streams.assign(count, nullptr);
  }
  INFLLM_CHECK(device >= 0 && device < int(streams.size()), "no GPU cuda:", device);
  if (!streams[device]) {
    int previous;
    CUDA_CHECK(cudaGetDevice(&previous));
    CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&streams[device], cudaStreamNonBlocking));
    CUDA_CHECK(cudaSetDevice(previous));
  }
  return streams[device];
}

void set_device(int device) {
  CUDA_CHECK(cudaSetDevice(device));
}

int current_device() {
  int device;
  CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

void synchronize(int device) {
  CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(compute_stream(device))));
}

int compute_capability(int device) {
  int major = 0, minor = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return major * 10 + minor;
}

}  // namespace infllm::cuda
