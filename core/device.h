// Where a tensor lives. CUDA(n) is the n-th visible GPU.
#pragma once

#include <cstdint>
#include <string>

namespace infllm {

enum class DeviceKind : uint8_t { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;

  static Device cpu() { return {DeviceKind::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceKind::cuda, index}; }
  bool is_cpu() const { return kind == DeviceKind::cpu; }
  bool is_cuda() const { return kind == DeviceKind::cuda; }
  bool operator==(const Device&) const = default;
  std::string str() const;
};

// Number of usable GPUs: 0 in a CPU-only build or when no driver/GPU is present.
int cuda_device_count();
// The first GPU if one is present, else the CPU.
Device best_device();
// Parses "cpu", "cuda", "cuda:1" or "auto" (= best_device()).
Device parse_device(const std::string& text);
// The compute stream (a cudaStream_t) that kernels on `device` run on; nullptr for the CPU.
void* device_stream(Device device);
// Free and total bytes of a GPU's memory now (cudaMemGetInfo on that GPU); both 0 for the CPU
// and when the GPU does not answer.
struct DeviceMemory {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
};
DeviceMemory device_memory(Device device);
// Throws a clear error when `device` is a GPU that this process cannot use.
void require_device(Device device, const char* where);

}  // namespace infllm
