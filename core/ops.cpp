#include "core/ops.h"

#include <algorithm>

#include "core/dispatch.h"
#include "core/kernels/embedding.h"
#include "core/kernels/softmax.h"

namespace infllm::ops {
namespace {

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  INFLLM_CHECK(a.device() == b.device(), op, ": operands on different devices: ", a.str(), " and ",
               b.str(), " (move one with .to(device))");
}

void check_floating(const Tensor& x, const char* op) {
  INFLLM_CHECK(is_floating(x.dtype()), op, ": expected a floating-point tensor, got ", x.str());
}

int64_t normalize_axis(int64_t axis, int64_t dim, const char* op) {
  INFLLM_CHECK(axis >= -dim && axis < dim, op, ": axis ", axis, " out of range for a ", dim,
               "-d tensor");
  return axis < 0 ? axis + dim : axis;
}

// A view of x with `shape` (x's shape right-aligned), broadcast dims given stride 0.
Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  Shape strides(shape.size(), 0);
  int64_t lead = int64_t(shape.size()) - x.dim();
  for (int64_t i = 0; i < x.dim(); ++i) {
    strides[lead + i] = x.shape()[i] == 1 ? 0 : x.strides()[i];
  }
  return x.as_strided(shape, strides);
}

}  // namespace

Tensor zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor out = Tensor::empty(shape, dtype, device);
  fill_(out, value);
  return out;
}

void fill_(Tensor& out, double value) {
  INFLLM_CHECK(out.is_contiguous(), "fill_: needs a contiguous tensor, got ", out.str());
  INFLLM_DISPATCH(out.device(), fill, out, value);
}

Tensor arange(int64_t n, DType dtype, Device device) {
  Tensor out = Tensor::empty({n}, dtype, device);
  INFLLM_DISPATCH(device, arange, out, 0.0, 1.0);
  return out;
}

Tensor random(const Shape& shape, const RandomArgs& args, DType dtype, Device device) {
  Tensor out = Tensor::empty(shape, dtype, device);
  check_floating(out, "random");
  INFLLM_DISPATCH(device, random, out, args);
  return out;
}

Tensor uniform(const Shape& shape, uint64_t seed, uint64_t offset, double low, double high,
               DType dtype, Device device) {
  return random(shape, {RandomKind::uniform, seed, offset, low, high}, dtype, device);
}

Tensor normal(const Shape& shape, uint64_t seed, uint64_t offset, double mean, double std,
              DType dtype, Device device) {
  return random(shape, {RandomKind::normal, seed, offset, mean, std}, dtype, device);
}

Tensor unary(UnaryOp op, const Tensor& x) {
  check_floating(x, unary_op_name(op));
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  INFLLM_DISPATCH(x.device(), unary, op, x, out);
  return out;
}

Tensor neg(const Tensor& x) {
  return unary(UnaryOp::neg, x);
}
Tensor exp(const Tensor& x) {
  return unary(UnaryOp::exp, x);
}
Tensor log(const Tensor& x) {
  return unary(UnaryOp::log, x);
}
Tensor sqrt(const Tensor& x) {
  return unary(UnaryOp::sqrt, x);
}
Tensor rsqrt(const Tensor& x) {
  return unary(UnaryOp::rsqrt, x);
}
Tensor sigmoid(const Tensor& x) {
  return unary(UnaryOp::sigmoid, x);
}
Tensor silu(const Tensor& x) {
  return unary(UnaryOp::silu, x);
}
Tensor gelu(const Tensor& x) {
  return unary(UnaryOp::gelu, x);
}
Tensor square(const Tensor& x) {
  return unary(UnaryOp::square, x);
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  Shape out(std::max(a.size(), b.size()));
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t da = i < out.size() - a.size() ? 1 : a[i - (out.size() - a.size())];
    int64_t db = i < out.size() - b.size() ? 1 : b[i - (out.size() - b.size())];
    INFLLM_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ",
                 shape_str(b), " do not broadcast (axis ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_op_name(op);
  check_same_device(a, b, name);
  INFLLM_CHECK(a.dtype() == b.dtype(), name, ": dtypes differ: ", a.str(), " and ", b.str(),
               " (cast one first)");
  check_floating(a, name);
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  INFLLM_DISPATCH(a.device(), binary, op, broadcast_to(a, shape), broadcast_to(b, shape), out);
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) {
  return binary(BinaryOp::add, a, b);
}
Tensor sub(const Tensor& a, const Tensor& b) {
  return binary(BinaryOp::sub, a, b);
}
Tensor mul(const Tensor& a, const Tensor& b) {
  return binary(BinaryOp::mul, a, b);
}
Tensor div(const Tensor& a, const Tensor& b) {
  return binary(BinaryOp::div, a, b);
}

namespace {

Tensor binary_scalar(BinaryOp op, const Tensor& a, double scalar) {
  check_floating(a, binary_op_name(op));
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  INFLLM_DISPATCH(a.device(), binary_scalar, op, a, scalar, out);
  return out;
}

}  // namespace

Tensor add(const Tensor& a, double scalar) {
  return binary_scalar(BinaryOp::add, a, scalar);
}
Tensor mul(const Tensor& a, double scalar) {
  return binary_scalar(BinaryOp::mul, a, scalar);
}

void add_(Tensor& acc, const Tensor& x) {
  check_same_device(acc, x, "add_");
  INFLLM_CHECK(acc.is_contiguous(), "add_: accumulator must be contiguous, got ", acc.str());
  INFLLM_CHECK(broadcast_shapes(acc.shape(), x.shape(), "add_") == acc.shape(), "add_: ", x.str(),
               " does not broadcast into ", acc.str());
  Tensor addend = x.dtype() == acc.dtype() ? x : cast(x, acc.dtype());
  INFLLM_DISPATCH(acc.device(), binary, BinaryOp::add, acc, broadcast_to(addend, acc.shape()), acc);
}

Tensor cast(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  INFLLM_DISPATCH(x.device(), cast, x.contiguous(), out);
  return out;
}

Tensor reduce(ReduceOp op, const Tensor& x, std::optional<int64_t> axis, bool keepdim) {
  check_floating(x, "reduce");
  INFLLM_CHECK(x.numel() > 0 || op != ReduceOp::max, "max of an empty tensor ", x.str());
  Tensor input = x.contiguous();
  if (!axis) {
    Tensor out = Tensor::empty(keepdim ? Shape(x.dim(), 1) : Shape{}, x.dtype(), x.device());
    INFLLM_DISPATCH(x.device(), reduce, op, input, 1, x.numel(), 1, out);
    return out;
  }
  int64_t a = normalize_axis(*axis, x.dim(), "reduce");
  int64_t outer = shape_numel(Shape(x.shape().begin(), x.shape().begin() + a));
  int64_t inner = shape_numel(Shape(x.shape().begin() + a + 1, x.shape().end()));
  Shape shape = x.shape();
  if (keepdim) {
    shape[a] = 1;
  } else {
    shape.erase(shape.begin() + a);
  }
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  INFLLM_DISPATCH(x.device(), reduce, op, input, outer, x.shape()[a], inner, out);
  return out;
}

Tensor sum(const Tensor& x, std::optional<int64_t> axis, bool keepdim) {
  return reduce(ReduceOp::sum, x, axis, keepdim);
}
Tensor mean(const Tensor& x, std::optional<int64_t> axis, bool keepdim) {
  return reduce(ReduceOp::mean, x, axis, keepdim);
}
Tensor max(const Tensor& x, std::optional<int64_t> axis, bool keepdim) {
  return reduce(ReduceOp::max, x, axis, keepdim);
}

Tensor expand(const Tensor& x, const Shape& shape) {
  INFLLM_CHECK(broadcast_shapes(x.shape(), shape, "expand") == shape, "expand: ", x.str(),
               " does not broadcast to ", shape_str(shape));
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  INFLLM_DISPATCH(x.device(), copy_strided, broadcast_to(x, shape), out);
  return out;
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  Tensor out = x;
  int64_t lead = x.dim() - int64_t(shape.size());
  INFLLM_CHECK(lead >= 0, "sum_to: cannot reduce ", x.str(), " to ", shape_str(shape));
  for (int64_t i = 0; i < lead; ++i) out = sum(out, 0, false);
  for (int64_t i = 0; i < int64_t(shape.size()); ++i) {
    if (shape[i] == 1 && out.shape()[i] != 1) out = sum(out, i, true);
  }
  INFLLM_CHECK(out.shape() == shape, "sum_to: cannot reduce ", x.str(), " to ", shape_str(shape));
  return out;
}

namespace {

Tensor softmax_along_last(const Tensor& x, bool log) {
  check_floating(x, log ? "log_softmax" : "softmax");
  Tensor input = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  INFLLM_DISPATCH(x.device(), softmax, input, log, y);
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x) {
  return softmax_along_last(x, false);
}
Tensor log_softmax(const Tensor& x) {
  return softmax_along_last(x, true);
}

Tensor softmax_backward(const Tensor& y, const Tensor& dy, bool log) {
  INFLLM_CHECK(y.shape() == dy.shape(), "softmax_backward: ", y.str(), " vs ", dy.str());
  Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
  INFLLM_DISPATCH(y.device(), softmax_backward, y.contiguous(), dy.contiguous(), log, dx);
  return dx;
}

namespace {

// Views an operand as a contiguous 3-D [batch, rows, cols] block for the matmul kernel.
Tensor as_batched_matrix(const Tensor& x, int64_t batch) {
  return x.contiguous().view({batch, x.size(-2), x.size(-1)});
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
              std::optional<DType> out_dtype) {
  INFLLM_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: operands must be at least 2-d, got ", a.str(),
               " and ", b.str());
  int64_t m = trans_a ? a.size(-1) : a.size(-2);
  int64_t n = trans_b ? b.size(-2) : b.size(-1);
  Shape batch_a(a.shape().begin(), a.shape().end() - 2);
  Shape batch_b(b.shape().begin(), b.shape().end() - 2);
  INFLLM_CHECK(batch_a.empty() || batch_b.empty() || batch_a == batch_b,
               "matmul: batch dimensions differ: ", a.str(), " @ ", b.str());
  Shape shape = batch_a.empty() ? batch_b : batch_a;
  shape.push_back(m);
  shape.push_back(n);
  Tensor out = Tensor::empty(shape, out_dtype.value_or(a.dtype()), a.device());
  matmul_into(a, b, out, {trans_a, trans_b, 1.0f, 0.0f});
  return out;
}

void matmul_into(const Tensor& a, const Tensor& b, Tensor& out, const MatmulArgs& args) {
  check_same_device(a, b, "matmul");
  check_same_device(a, out, "matmul");
  INFLLM_CHECK(a.dtype() == b.dtype(), "matmul: dtypes differ: ", a.str(), " and ", b.str());
  check_floating(a, "matmul");
  int64_t k_a = args.trans_a ? a.size(-2) : a.size(-1);
  int64_t k_b = args.trans_b ? b.size(-1) : b.size(-2);
  INFLLM_CHECK(k_a == k_b, "matmul: inner dimensions differ: ", a.str(), args.trans_a ? "^T" : "",
               " @ ", b.str(), args.trans_b ? "^T" : "", " (", k_a, " vs ", k_b, ")");
  int64_t batch = shape_numel(Shape(out.shape().begin(), out.shape().end() - 2));
  auto batch_of = [](const Tensor& x) {
    return shape_numel(Shape(x.shape().begin(), x.shape().end() - 2));
  };
  INFLLM_CHECK(batch_of(a) == 1 || batch_of(a) == batch, "matmul: batch of ", a.str(),
               " vs output ", out.str());
  INFLLM_CHECK(batch_of(b) == 1 || batch_of(b) == batch, "matmul: batch of ", b.str(),
               " vs output ", out.str());
  INFLLM_CHECK(out.is_contiguous(), "matmul: output must be contiguous");
  Tensor out3 = out.view({batch, out.size(-2), out.size(-1)});
  INFLLM_DISPATCH(out.device(), matmul, as_batched_matrix(a, batch_of(a)),
                  as_batched_matrix(b, batch_of(b)), out3, args);
}

Tensor embedding(const Tensor& table, const Tensor& index) {
  check_same_device(table, index, "embedding");
  INFLLM_CHECK(table.dim() == 2, "embedding: table must be [V, C], got ", table.str());
  INFLLM_CHECK(index.dtype() == DType::i32, "embedding: index must be i32, got ", index.str());
  Shape shape = index.shape();
  shape.push_back(table.size(1));
  Tensor out = Tensor::empty(shape, table.dtype(), table.device());
  Tensor flat_out = out.view({index.numel(), table.size(1)});
  INFLLM_DISPATCH(table.device(), embedding_forward, table.contiguous(),
                  index.contiguous().view({index.numel()}), flat_out);
  return out;
}

void embedding_backward_into(const Tensor& index, const Tensor& dout, Tensor& dtable) {
  check_same_device(index, dtable, "embedding_backward");
  INFLLM_CHECK(dout.numel() == index.numel() * dtable.size(1), "embedding_backward: ", dout.str(),
               " does not match index ", index.str(), " and table ", dtable.str());
  INFLLM_DISPATCH(dtable.device(), embedding_backward, index.contiguous().view({index.numel()}),
                  dout.contiguous().view({index.numel(), dtable.size(1)}), dtable);
}

Tensor concat(const std::vector<Tensor>& parts, int64_t axis) {
  INFLLM_CHECK(!parts.empty(), "concat: no tensors");
  int64_t a = normalize_axis(axis, parts[0].dim(), "concat");
  Shape shape = parts[0].shape();
  shape[a] = 0;
  for (const Tensor& p : parts) {
    check_same_device(parts[0], p, "concat");
    Shape expect = parts[0].shape();
    expect[a] = p.size(a);
    INFLLM_CHECK(p.shape() == expect && p.dtype() == parts[0].dtype(), "concat: ", p.str(),
                 " does not match ", parts[0].str(), " outside axis ", a);
    shape[a] += p.size(a);
  }
  Tensor out = Tensor::empty(shape, parts[0].dtype(), parts[0].device());
  int64_t begin = 0;
  for (const Tensor& p : parts) {
    Tensor dst = out.slice(a, begin, begin + p.size(a));
    INFLLM_DISPATCH(out.device(), copy_strided, p, dst);
    begin += p.size(a);
  }
  return out;
}

}  // namespace infllm::ops
