// Softmax / log-softmax along the last axis of a contiguous [rows, n] tensor, and their
// backward from the saved output y: softmax dx = y * (dy - sum(dy * y)); log-softmax
// dx = dy - exp(y) * sum(dy).
#pragma once

#include "core/tensor.h"

namespace infllm {

namespace cpu {
void softmax(const Tensor& x, bool log, Tensor& y);
void softmax_backward(const Tensor& y, const Tensor& dy, bool log, Tensor& dx);
}  // namespace cpu
namespace cuda {
void softmax(const Tensor& x, bool log, Tensor& y);
void softmax_backward(const Tensor& y, const Tensor& dy, bool log, Tensor& dx);
}  // namespace cuda

}  // namespace infllm
