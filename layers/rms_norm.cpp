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

// dx (and dw) of y = norm(x) given dy, plus dsum (the gradient reaching x from its other
// consumers; may be undefined) added into dx.
std::vector<Tensor> rms_norm_backward(const Tensor& dy_in, const Tensor& dsum_in, const Tensor& x,
                                      const Tensor& weight, const Tensor& rstd) {
  const int64_t C = x.size(-1), N = x.numel() / C;
  const Device device = x.device();
  Tensor dy = dy_in.contiguous(), dsum = dsum_in.defined() ? dsum_in.contiguous() : Tensor();
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), device);
  Tensor dw = Tensor::empty({C}, device.is_cuda() ? DType::f32 : x.dtype(), device);
  if (device.is_cuda()) {
    Tensor workspace = scratch(rms_norm_backward_cuda_workspace_bytes(N, C), device);
    rms_norm_backward_cuda(bf16_bits(dy), bf16_bits(x), bf16_bits(weight), rstd.data<float>(),
                           dsum.defined() ? bf16_bits(dsum) : nullptr, bf16_bits(dx),
                           dw.data<float>(), workspace.data_ptr(), N, C, device_stream(device));
  } else {
    visit_f32_f64(x.dtype(), "rms_norm_backward", [&]<class T>() {
      rms_norm_backward_cpu<T>(dy.data<T>(), x.data<T>(), weight.data<T>(), rstd.data<T>(),
                               dsum.defined() ? dsum.data<T>() : nullptr, dx.data<T>(),
                               dw.data<T>(), N, C);
    });
  }
  return {dx, dw};
}

Tensor make_rstd(const Tensor& x) {
  const Device device = x.device();
  return Tensor::empty({x.numel() / x.size(-1)}, device.is_cuda() ? DType::f32 : x.dtype(), device);
}

}  // namespace

Tensor rms_norm(const Tensor& x_in, const Tensor& weight, double eps) {
  check_inputs(x_in, weight);
  Tensor x = x_in.contiguous();
  int64_t C = x.size(-1), N = x.numel() / C;
  Device device = x.device();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), device), rstd = make_rstd(x);
  if (device.is_cuda()) {
    rms_norm_forward_cuda(bf16_bits(x), bf16_bits(weight), bf16_bits(y), rstd.data<float>(), N, C,
                          float(eps), device_stream(device));
  } else {
    visit_f32_f64(x.dtype(), "rms_norm", [&]<class T>() {
      rms_norm_forward_cpu<T>(x.data<T>(), weight.data<T>(), y.data<T>(), rstd.data<T>(), N, C,
                              eps);
    });
  }
  Tensor saved_x = x.detach(), saved_w = weight.detach();
  return autograd::record("rms_norm", {x_in, weight}, y, [=](const std::vector<Tensor>& g) {
    return rms_norm_backward(g[0], Tensor(), saved_x, saved_w, rstd);
  });
}

std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x_in, const Tensor& residual_in,
                                       const Tensor& weight, double eps) {
  check_inputs(x_in, weight);
  INFLLM_CHECK(residual_in.shape() == x_in.shape() && residual_in.dtype() == x_in.dtype() &&
                   residual_in.device() == x_in.device(),
               "add_rms_norm: residual ", residual_in.str(), " does not match input ", x_in.str());
  Tensor x = x_in.contiguous(), residual = residual_in.contiguous();
  int64_t C = x.size(-1), N = x.numel() / C;
  Device device = x.device();
  Tensor sum = Tensor::empty(x.shape(), x.dtype(), device);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), device), rstd = make_rstd(x);
  if (device.is_cuda()) {
    rms_norm_residual_forward_cuda(bf16_bits(x), bf16_bits(residual), bf16_bits(sum),
                                   bf16_bits(weight), bf16_bits(y), rstd.data<float>(), N, C,
                                   float(eps), device_stream(device));
  } else {
    visit_f32_f64(x.dtype(), "add_rms_norm", [&]<class T>() {
      rms_norm_residual_forward_cpu<T>(x.data<T>(), residual.data<T>(), sum.data<T>(),
                                       weight.data<T>(), y.data<T>(), rstd.data<T>(), N, C, eps);
    });
  }
  Tensor saved_sum = sum.detach(), saved_w = weight.detach();
  autograd::record(
      "add_rms_norm", {x_in, residual_in, weight}, {&sum, &y}, [=](const std::vector<Tensor>& g) {
        // One kernel: d sum = g[0] + norm backward of g[1], for x and residual alike.
        std::vector<Tensor> d = rms_norm_backward(g[1], g[0], saved_sum, saved_w, rstd);
        return std::vector<Tensor>{d[0], d[0], d[1]};
      });
  return {sum, y};
}

RMSNorm::RMSNorm(ParameterFactory& factory, int64_t dim, double eps)
    : weight(factory.ones({dim})), eps_(eps) {
  register_parameter("weight", weight);
}

}  // namespace infllm
