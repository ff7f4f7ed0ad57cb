#include "layers/rope.h"

#include "autograd/node.h"
#include "core/dispatch.h"
#include "layers/rope_kernels.h"

namespace infllm {
namespace {

// Rotates by +angle (forward) or -angle (backward: the rotation is orthogonal).
Tensor rotate(const Tensor& x, double theta, int64_t pos_offset, int64_t rotated, bool inverse) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  if (x.device().is_cuda()) {
    void* stream = device_stream(x.device());
    auto launch = [&](const auto* in, auto* result) {
      if (inverse) {
        rope_backward_cuda(in, result, B, T, H, D, theta, pos_offset, rotated, stream);
      } else {
        rope_forward_cuda(in, result, B, T, H, D, theta, pos_offset, rotated, stream);
      }
    };
    if (x.dtype() == DType::bf16) {
      launch(bf16_bits(x), bf16_bits(out));
    } else {
      INFLLM_CHECK(x.dtype() == DType::f32, "rope: CUDA takes bf16 or f32, got ", x.str());
      launch(x.data<float>(), out.data<float>());
    }
  } else {
    visit_f32_f64(x.dtype(), "rope", [&]<class F>() {
      (inverse ? rope_backward_cpu<F> : rope_forward_cpu<F>)(x.data<F>(), out.data<F>(), B, T, H, D,
                                                             theta, pos_offset, rotated);
    });
  }
  return out;
}

}  // namespace

Tensor rope(const Tensor& x, double theta, int64_t pos_offset, int64_t rotated_heads) {
  INFLLM_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "rope: expected [B, T, H, D] with even D, got ",
               x.str());
  const int64_t rotated = rotated_heads < 0 ? x.size(2) : rotated_heads;
  return autograd::record(
      "rope", {x}, rotate(x.contiguous(), theta, pos_offset, rotated, false),
      [=](const std::vector<Tensor>& g) {
        return std::vector<Tensor>{rotate(g[0].contiguous(), theta, pos_offset, rotated, true)};
      });
}

}  // namespace infllm
