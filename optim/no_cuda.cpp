// The CPU-only build's optim/adamw_kernels.cu: the same entry points, each an error
// (core/no_cuda.h).
#include "core/no_cuda.h"
#include "optim/adamw_kernels.h"

namespace infllm {

void adamw_step_cuda(const AdamWTensor*, int, int64_t, const AdamWHyper&, void*) {
  no_cuda_backend("adamw_step_cuda");
}
size_t grad_sum_squares_cuda_workspace_bytes(int64_t) {
  no_cuda_backend("grad_sum_squares_cuda_workspace_bytes");
}
void grad_sum_squares_cuda(const AdamWTensor*, int, int64_t, void*, float*, void*) {
  no_cuda_backend("grad_sum_squares_cuda");
}

}  // namespace infllm
