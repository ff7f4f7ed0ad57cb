// AdamW step (decoupled weight decay, bias correction) and the global gradient norm, CPU
// reference and one-launch multi-tensor CUDA versions.
// For each element, with g = grad * grad_scale, lr = hp.lr * lr_scale, t = hp.step (from 1):
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g^2
//   p = p * (1 - lr * weight_decay) - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// the order and form of PyTorch's AdamW. Master weights p and the moments m, v are f32; an
// optional bf16 copy of the updated p (the compute weights) is written in the same pass.
// grad_scale folds gradient clipping (max_norm / norm) or loss-scale undoing into the step.
#pragma once

#include <cstddef>
#include <cstdint>

namespace infllm {

struct AdamWHyper {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  int64_t step = 1;  // 1 for the first update
  float grad_scale = 1.0f;
};

// One parameter tensor, updated in place. param_bf16 may be null.
template <class Float>
void adamw_update_cpu(Float* param, Float* exp_avg, Float* exp_avg_sq, const Float* grad,
                      uint16_t* param_bf16, int64_t n, const AdamWHyper& hp, float lr_scale,
                      float weight_decay);
// sum_i grad[i]^2 in double; the global norm is the sqrt of the sum over all tensors.
template <class Float>
double grad_sum_squares_cpu(const Float* grad, int64_t n);

// One tensor of the multi-tensor CUDA launch. The array of these lives in device memory (the
// pointers are stable across steps, so upload it once); adamw_plan_chunks fills first_chunk.
struct AdamWTensor {
  float* param = nullptr;          // [n] f32 master weights
  float* exp_avg = nullptr;        // [n] f32
  float* exp_avg_sq = nullptr;     // [n] f32
  const void* grad = nullptr;      // [n] f32, or bf16 when grad_is_bf16
  uint16_t* param_bf16 = nullptr;  // [n] bf16 copy of the updated param, or null
  int64_t n = 0;
  int64_t first_chunk = 0;  // index of this tensor's first chunk of kAdamWChunk elements
  float lr_scale = 1.0f;
  float weight_decay = 0.0f;  // 0 for norms and biases
  int32_t grad_is_bf16 = 0;
};

// Elements per chunk: a block handles one chunk at a time, a tensor spans ceil(n / chunk).
inline constexpr int64_t kAdamWChunk = 16384;

// Host side, no CUDA needed: checks each tensor and sets its first_chunk; returns the total
// number of chunks to pass to the launches below.
int64_t adamw_plan_chunks(AdamWTensor* tensors, int count);

// Updates every tensor of `device_tensors` (count entries, planned) in one launch.
void adamw_step_cuda(const AdamWTensor* device_tensors, int count, int64_t total_chunks,
                     const AdamWHyper& hp, void* stream);
// Bytes of device scratch grad_sum_squares_cuda needs (one float per block).
size_t grad_sum_squares_cuda_workspace_bytes(int64_t total_chunks);
// *out_sum_squares (device) = sum over all tensors of grad^2, reduced in a fixed order (the
// same bits on every run). Two launches, no atomics.
void grad_sum_squares_cuda(const AdamWTensor* device_tensors, int count, int64_t total_chunks,
                           void* workspace, float* out_sum_squares, void* stream);

}  // namespace infllm
