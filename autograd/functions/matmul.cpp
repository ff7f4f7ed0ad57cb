// Matrix product and embedding lookup with their gradients.
#include "autograd/functions.h"
#include "autograd/node.h"
#include "core/kernels/embedding.h"

namespace infllm {

using autograd::record;

namespace {

// A leaf's gradient is accumulated in f32 anyway (autograd/engine.h): for a bf16 weight, the
// matrix unit writes the product in f32 directly instead of rounding to bf16 and casting.
DType gradient_dtype(const Tensor& operand) {
  bool leaf = operand.requires_grad() && !operand.grad_fn();
  return leaf && operand.dtype() == DType::bf16 ? DType::f32 : operand.dtype();
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  Tensor sa = a.detach(), sb = b.detach();
  DType da_dtype = gradient_dtype(a), db_dtype = gradient_dtype(b);
  return record(
      "matmul", {a, b}, ops::matmul(a, b, trans_a, trans_b), [=](const std::vector<Tensor>& g) {
        // C = op(A) op(B): each case writes dA, dB in the operands' stored layout.
        const Tensor& dc = g[0];
        Tensor da = trans_a ? ops::matmul(sb, dc, trans_b, true, da_dtype)
                            : ops::matmul(dc, sb, false, !trans_b, da_dtype);
        Tensor db = trans_b ? ops::matmul(dc, sa, true, trans_a, db_dtype)
                            : ops::matmul(sa, dc, !trans_a, false, db_dtype);
        return std::vector<Tensor>{ops::sum_to(da, sa.shape()), ops::sum_to(db, sb.shape())};
      });
}

Tensor embedding(const Tensor& table, const Tensor& index) {
  Shape table_shape = table.shape();
  Device device = table.device();
  // Scatter-add collides on repeated tokens: accumulate in f32 even for bf16 tables.
  DType grad_dtype = table.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor saved_index = index.detach();
  return record("embedding", {table, index}, ops::embedding(table, index),
                [=](const std::vector<Tensor>& g) {
                  Tensor dtable = ops::zeros(table_shape, grad_dtype, device);
                  ops::embedding_backward_into(saved_index, g[0], dtable);
                  return std::vector<Tensor>{dtable, Tensor()};
                });
}

}  // namespace infllm
