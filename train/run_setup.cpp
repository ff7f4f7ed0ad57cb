#include "train/run_setup.h"

#include "core/cuda/stream.h"

namespace infllm::train {

Device choose_device(const Recipe& recipe, int local_rank) {
  int gpus = cuda_device_count();
  switch (recipe.train.device) {
    case DeviceChoice::cpu:
      return Device::cpu();
    case DeviceChoice::cuda:
      INFLLM_CHECK(gpus > 0,
                   "train.device: cuda was asked for but no GPU is visible (set "
                   "train.device=auto or cpu)");
      break;
    case DeviceChoice::automatic:
      if (gpus == 0) return Device::cpu();
      break;
  }
  INFLLM_CHECK(local_rank < gpus, "local rank ", local_rank, " has no GPU: only ", gpus,
               " visible (start at most one rank per GPU)");
  return Device::cuda(local_rank);
}

DType compute_dtype(const Recipe& recipe, Device device) {
  if (device.is_cpu()) return DType::f32;
  INFLLM_CHECK(recipe.train.precision == Precision::bf16,
               "train.precision: f32 is not available "
               "on ",
               device.str(),
               " (the CUDA kernels compute in bf16 with f32 accumulation); "
               "set train.precision=bf16, or train.device=cpu for an f32 run");
  return DType::bf16;
}

double learning_rate(const Recipe& recipe, int64_t step) {
  return infllm::learning_rate(recipe.schedule, recipe.optim.lr, recipe.train.steps, step);
}

double peak_flops(Device device) {
  if (!device.is_cuda()) return 0;
  const int major = cuda::compute_capability(device.index) / 10;
  // Hopper (H100/H200 SXM): 989 TFLOP/s dense bf16, the figure MFU is quoted against.
  if (major == 9) return 989e12;
  if (major == 8) return 312e12;
  return 0;
}

}  // namespace infllm::train
