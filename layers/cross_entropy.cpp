#include "layers/cross_entropy.h"

#include <algorithm>

#include "autograd/node.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "layers/cross_entropy_kernels.h"

namespace infllm {
namespace {

// Rows per chunk: about 256 MiB of logits at a time.
int64_t chunk_rows(int64_t V, DType dtype) {
  return std::max<int64_t>(1, (int64_t(256) << 20) / (V * int64_t(dtype_size(dtype))));
}

// Per-row losses of one chunk; when `with_grad`, logits are overwritten by dlogits * scale.
Tensor chunk_loss(Tensor& logits, const Tensor& targets, double grad_scale, bool with_grad) {
  int64_t n = logits.size(0), V = logits.size(1);
  Device device = logits.device();
  Tensor loss = Tensor::empty({n}, device.is_cuda() ? DType::f32 : logits.dtype(), device);
  if (device.is_cuda()) {
    INFLLM_CHECK(logits.dtype() == DType::bf16, "cross_entropy: CUDA takes bf16, got ",
                 logits.str());
    cross_entropy_forward_backward_cuda(bf16_bits(logits), targets.data<int32_t>(),
                                        loss.data<float>(), with_grad ? bf16_bits(logits) : nullptr,
                                        n, V, float(grad_scale), device_stream(device));
  } else {
    visit_f32_f64(logits.dtype(), "cross_entropy", [&]<class T>() {
      cross_entropy_forward_backward_cpu<T>(logits.data<T>(), targets.data<int32_t>(),
                                            loss.data<T>(), with_grad ? logits.data<T>() : nullptr,
                                            n, V, grad_scale);
    });
  }
  return loss;
}

}  // namespace

Tensor lm_head_cross_entropy(const Tensor& hidden_in, const Tensor& weight_in,
                             const Tensor& targets_in, int64_t valid_count) {
  INFLLM_CHECK(
      hidden_in.dim() == 2 && weight_in.dim() == 2 && hidden_in.size(1) == weight_in.size(1),
      "lm_head_cross_entropy: hidden ", hidden_in.str(), " does not match weight ",
      weight_in.str());
  INFLLM_CHECK(targets_in.dtype() == DType::i32 && targets_in.numel() == hidden_in.size(0),
               "lm_head_cross_entropy: targets ", targets_in.str(), " for hidden ",
               hidden_in.str());
  INFLLM_CHECK(valid_count > 0, "lm_head_cross_entropy: no valid targets");
  Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous();
  Tensor targets = targets_in.contiguous();
  int64_t N = hidden.size(0), C = hidden.size(1), V = weight.size(0);
  Device device = hidden.device();
  bool with_grad = autograd::needs_graph({hidden_in, weight_in});
  DType loss_dtype = hidden.dtype() == DType::f64 ? DType::f64 : DType::f32;
  DType grad_dtype = hidden.dtype() == DType::f64 ? DType::f64 : DType::f32;

  Tensor total = ops::zeros({}, loss_dtype, device);
  Tensor dhidden, dweight;
  if (with_grad) {
    dhidden = Tensor::empty({N, C}, hidden.dtype(), device);
    dweight = ops::zeros({V, C}, grad_dtype, device);
  }
  double scale = 1.0 / double(valid_count);
  int64_t step = chunk_rows(V, hidden.dtype());
  for (int64_t r0 = 0; r0 < N; r0 += step) {
    int64_t r1 = std::min(N, r0 + step);
    Tensor rows = hidden.slice(0, r0, r1);
    Tensor logits = ops::matmul(rows, weight, false, true);
    Tensor loss = chunk_loss(logits, targets.slice(0, r0, r1), scale, with_grad);
    ops::add_(total, ops::cast(ops::sum(loss), loss_dtype));
    if (with_grad) {
      Tensor dh_rows = dhidden.slice(0, r0, r1);
      ops::matmul_into(logits, weight, dh_rows, {});
      ops::matmul_into(logits, rows, dweight, {true, false, 1.0f, 1.0f});
    }
  }
  Tensor mean_loss = ops::mul(total, scale);
  if (!with_grad) return mean_loss;
  return autograd::record(
      "lm_head_cross_entropy", {hidden_in, weight_in, targets_in}, mean_loss,
      [=](const std::vector<Tensor>& g) {
        Tensor g_h = ops::cast(g[0], dhidden.dtype());
        Tensor g_w = ops::cast(g[0], dweight.dtype());
        return std::vector<Tensor>{ops::mul(dhidden, g_h), ops::mul(dweight, g_w), Tensor()};
      });
}

}  // namespace infllm
