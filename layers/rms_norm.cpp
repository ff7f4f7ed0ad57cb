#include "layers/rms_norm.h"

#include "autograd/node.h"
#include "core/dispatch.h"
#include "core/ops.h"
#include "layers/rms_norm_kernels.h"

namespace infllm {
namespace {

void check_inputs(const Tensor& x, const Tensor& weight) {
  INFLLM_CHECK(weight.dim() == 1 && x.size(-1) == weight.size(0), "rms_norm: input ", x.str(),
               " does not match weight ", weight.str());
  INFLLM_CHECK(x.dtype() == weight.dtype() && x.device() == weight.device(), "rms_norm: input ",
               x.str(), " and weight ", weight.str(), " differ in dtype or device");
  INFLLM_CHECK(x.device().is_cpu() ? x.dtype() != DType::bf16 : x.dtype() == DType::bf16,
               "rms_norm: ", x.str(), " unsupported (CPU computes f32/f64, CUDA bf16)");
}

}  // namespace

Tensor rms_norm(const Tensor& x_in, const Tensor& weight, double eps) {
  check_inputs(x_in, weight);
  Tensor x = x_in.contiguous();
  int64_t C = x.size(-1), N = x.numel() / C;
  Device device = x.device();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), device);
  Tensor rstd = Tensor::empty({N}, device.is_cuda() ? DType::f32 : x.dtype(), device);
  if (device.is_cuda()) {
    INFLLM_IF_CUDA(rms_norm_forward_cuda(bf16_bits(x), bf16_bits(weight), bf16_bits(y),
                                         rstd.data<float>(), N, C, float(eps),
                                         device_stream(device)));
  } else {
    visit_f32_f64(x.dtype(), "rms_norm", [&]<class T>() {
      rms_norm_forward_cpu<T>(x.data<T>(), weight.data<T>(), y.data<T>(), rstd.data<T>(), N, C,
                              eps);
    });
  }
  Tensor saved_x = x.detach(), saved_w = weight.detach(), saved_rstd = rstd;
  return autograd::record("rms_norm", {x_in, weight}, y, [=](const std::vector<Tensor>& g) {
    Tensor dy = g[0].contiguous();
    Tensor dx = Tensor::empty(saved_x.shape(), saved_x.dtype(), device);
    Tensor dw = Tensor::empty({C}, device.is_cuda() ? DType::f32 : saved_x.dtype(), device);
    if (device.is_cuda()) {
      INFLLM_IF_CUDA({
        Tensor workspace = scratch(rms_norm_backward_cuda_workspace_bytes(N, C), device);
        rms_norm_backward_cuda(bf16_bits(dy), bf16_bits(saved_x), bf16_bits(saved_w),
                               saved_rstd.data<float>(), nullptr, bf16_bits(dx), dw.data<float>(),
                               workspace.data_ptr(), N, C, device_stream(device));
      });
    } else {
      visit_f32_f64(saved_x.dtype(), "rms_norm_backward", [&]<class T>() {
        rms_norm_backward_cpu<T>(dy.data<T>(), saved_x.data<T>(), saved_w.data<T>(),
                                 saved_rstd.data<T>(), nullptr, dx.data<T>(), dw.data<T>(), N, C);
      });
    }
    return std::vector<Tensor>{dx, dw};
  });
}

RMSNorm::RMSNorm(ParameterFactory& factory, int64_t dim, double eps)
    : weight(factory.ones({dim})), eps_(eps) {
  register_parameter("weight", weight);
}

}  // namespace infllm
