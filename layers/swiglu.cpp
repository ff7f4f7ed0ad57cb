#include "layers/swiglu.h"

#include "autograd/node.h"
#include "core/dispatch.h"
#include "layers/swiglu_kernels.h"

namespace infllm {

Tensor swiglu(const Tensor& gate_up_in) {
  INFLLM_CHECK(gate_up_in.size(-1) % 2 == 0, "swiglu: last axis must be [gate | up], got ",
               gate_up_in.str());
  Tensor gate_up = gate_up_in.contiguous();
  int64_t F = gate_up.size(-1) / 2, N = gate_up.numel() / (2 * F);
  Shape out_shape = gate_up.shape();
  out_shape.back() = F;
  Device device = gate_up.device();
  Tensor h = Tensor::empty(out_shape, gate_up.dtype(), device);
  if (device.is_cuda()) {
    INFLLM_CHECK(gate_up.dtype() == DType::bf16, "swiglu: CUDA takes bf16, got ", gate_up.str());

    swiglu_forward_cuda(bf16_bits(gate_up), bf16_bits(h), N, F, device_stream(device));
  } else {
    visit_f32_f64(gate_up.dtype(), "swiglu",
                  [&]<class T>() { swiglu_forward_cpu<T>(gate_up.data<T>(), h.data<T>(), N, F); });
  }
  Tensor saved = gate_up.detach();
  return autograd::record("swiglu", {gate_up_in}, h, [=](const std::vector<Tensor>& g) {
    Tensor dh = g[0].contiguous();
    Tensor dgate_up = Tensor::empty(saved.shape(), saved.dtype(), device);
    if (device.is_cuda()) {
      swiglu_backward_cuda(bf16_bits(dh), bf16_bits(saved), bf16_bits(dgate_up), N, F,
                           device_stream(device));
    } else {
      visit_f32_f64(saved.dtype(), "swiglu_backward", [&]<class T>() {
        swiglu_backward_cpu<T>(dh.data<T>(), saved.data<T>(), dgate_up.data<T>(), N, F);
      });
    }
    return std::vector<Tensor>{dgate_up};
  });
}

}  // namespace infllm
