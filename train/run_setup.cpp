#include "train/run_setup.h"

#if INFLLM_WITH_CUDA
#include <cuda_runtime.h>
#endif

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

attention::AttentionMode attention_mode(AttentionMode mode) {
  switch (mode) {
    case AttentionMode::dense:
      return attention::AttentionMode::dense;
    case AttentionMode::sparse:
      return attention::AttentionMode::sparse;
    case AttentionMode::automatic:
      break;
  }
  return attention::AttentionMode::automatic;
}

infllm::ModelConfig model_config(const Recipe& recipe) {
  const auto& m = recipe.model;
  const auto& a = recipe.attention;
  infllm::ModelConfig config;
  config.vocab_size = m.vocab_size;
  config.d_model = m.d_model;
  config.n_layers = m.n_layers;
  config.n_heads = m.n_heads;
  config.n_kv_heads = m.n_kv_heads;
  config.head_dim = m.head_dim;
  config.ffn_hidden = m.ffn_hidden;
  config.rope_theta = m.rope_theta;
  config.tie_embeddings = m.tie_embeddings;
  config.norm_eps = m.norm_eps;
  config.init_std = m.init_std;
  config.attention.mode = attention_mode(a.mode);
  config.attention.sparse = {a.kernel_size, a.kernel_stride, a.block_size, a.init_blocks,
                             a.window_size, a.topk,          a.dense_len,  a.lse_stride};
  config.activation_checkpointing = recipe.train.activation_checkpointing;
  config.recompute_attention = recipe.train.recompute_attention;
  return config;
}

AdamWOptions adamw_options(const Recipe& recipe) {
  const auto& o = recipe.optim;
  AdamWOptions options;
  options.lr = o.lr;
  options.beta1 = o.beta1;
  options.beta2 = o.beta2;
  options.eps = o.eps;
  options.weight_decay = o.weight_decay;
  options.no_decay = o.no_decay;
  return options;
}

ScheduleSpec schedule_spec(const Recipe& recipe) {
  ScheduleSpec spec;
  spec.kind = LrScheduleKind(int(recipe.schedule.kind));  // same kinds, same order
  spec.lr = recipe.optim.lr;
  spec.min_lr_ratio = recipe.schedule.min_lr_ratio;
  spec.decay_fraction = recipe.schedule.decay_fraction;
  spec.warmup_steps = recipe.schedule.warmup_steps;
  spec.total_steps = recipe.train.steps;
  return spec;
}

double peak_flops(Device device) {
#if INFLLM_WITH_CUDA
  if (device.is_cuda()) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device.index) != cudaSuccess) return 0;
    // Hopper (H100/H200 SXM): 989 TFLOP/s dense bf16, the figure MFU is quoted against.
    if (prop.major == 9) return 989e12;
    if (prop.major == 8) return 312e12;
  }
#endif
  return 0;
}

}  // namespace infllm::train
