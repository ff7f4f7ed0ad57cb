// The CPU-only build's layers/*_kernels.cu: the same entry points, each an error (core/no_cuda.h).
#include "core/no_cuda.h"
#include "layers/cross_entropy_kernels.h"
#include "layers/rms_norm_kernels.h"
#include "layers/rope_kernels.h"
#include "layers/swiglu_kernels.h"

namespace infllm {

void rms_norm_forward_cuda(const uint16_t*, const uint16_t*, uint16_t*, float*, int64_t, int64_t,
                           float, void*) {
  no_cuda_backend("rms_norm_forward_cuda");
}
void rms_norm_residual_forward_cuda(const uint16_t*, const uint16_t*, uint16_t*, const uint16_t*,
                                    uint16_t*, float*, int64_t, int64_t, float, void*) {
  no_cuda_backend("rms_norm_residual_forward_cuda");
}
size_t rms_norm_backward_cuda_workspace_bytes(int64_t, int64_t) {
  no_cuda_backend("rms_norm_backward_cuda_workspace_bytes");
}
void rms_norm_backward_cuda(const uint16_t*, const uint16_t*, const uint16_t*, const float*,
                            const uint16_t*, uint16_t*, float*, void*, int64_t, int64_t, void*) {
  no_cuda_backend("rms_norm_backward_cuda");
}

void cross_entropy_forward_backward_cuda(const uint16_t*, const int32_t*, float*, uint16_t*,
                                         int64_t, int64_t, float, void*) {
  no_cuda_backend("cross_entropy_forward_backward_cuda");
}

void swiglu_forward_cuda(const uint16_t*, uint16_t*, int64_t, int64_t, void*) {
  no_cuda_backend("swiglu_forward_cuda");
}
void swiglu_backward_cuda(const uint16_t*, const uint16_t*, uint16_t*, int64_t, int64_t, void*) {
  no_cuda_backend("swiglu_backward_cuda");
}

void rope_forward_cuda(const uint16_t*, uint16_t*, int64_t, int64_t, int64_t, int64_t, double,
                       int64_t, int64_t, void*) {
  no_cuda_backend("rope_forward_cuda");
}
void rope_backward_cuda(const uint16_t*, uint16_t*, int64_t, int64_t, int64_t, int64_t, double,
                        int64_t, int64_t, void*) {
  no_cuda_backend("rope_backward_cuda");
}
void rope_forward_cuda(const float*, float*, int64_t, int64_t, int64_t, int64_t, double, int64_t,
                       int64_t, void*) {
  no_cuda_backend("rope_forward_cuda");
}
void rope_backward_cuda(const float*, float*, int64_t, int64_t, int64_t, int64_t, double, int64_t,
                        int64_t, void*) {
  no_cuda_backend("rope_backward_cuda");
}

}  // namespace infllm
