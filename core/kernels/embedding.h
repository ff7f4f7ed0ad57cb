// Embedding lookup: out[n, :] = table[index[n], :] with table [V, C], index i32 [N].
// Backward scatter-adds dout [N, C] into dtable [V, C] (accumulating). An index outside
// [0, V) is an error naming the position and the value (CUDA checks on the device and reports
// after the launch).
#pragma once

#include "core/tensor.h"

namespace infllm {

namespace cpu {
void embedding_forward(const Tensor& table, const Tensor& index, Tensor& out);
void embedding_backward(const Tensor& index, const Tensor& dout, Tensor& dtable);
}  // namespace cpu
namespace cuda {
void embedding_forward(const Tensor& table, const Tensor& index, Tensor& out);
void embedding_backward(const Tensor& index, const Tensor& dout, Tensor& dtable);
}  // namespace cuda

}  // namespace infllm
