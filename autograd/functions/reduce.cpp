// Reductions and softmax with their gradients.
#include "autograd/functions.h"
#include "autograd/node.h"

namespace infllm {
namespace {

// The shape of a reduction's output with the reduced axis kept as 1 (or all ones).
Shape kept_shape(const Shape& shape, std::optional<int64_t> axis) {
  if (!axis) return Shape(shape.size(), 1);
  Shape kept = shape;
  kept[*axis < 0 ? *axis + int64_t(shape.size()) : *axis] = 1;
  return kept;
}

}  // namespace

using autograd::record;

Tensor sum(const Tensor& x, std::optional<int64_t> axis, bool keepdim) {
  Shape shape = x.shape(), kept = kept_shape(x.shape(), axis);
  return record("sum", {x}, ops::sum(x, axis, keepdim), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::expand(g[0].reshape(kept), shape)};
  });
}

Tensor mean(const Tensor& x, std::optional<int64_t> axis, bool keepdim) {
  Shape shape = x.shape(), kept = kept_shape(x.shape(), axis);
  double n = double(x.numel()) / double(std::max<int64_t>(1, shape_numel(kept)));
  return record("mean", {x}, ops::mean(x, axis, keepdim), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::mul(ops::expand(g[0].reshape(kept), shape), 1.0 / n)};
  });
}

Tensor max(const Tensor& x, std::optional<int64_t> axis, bool keepdim) {
  Tensor y = ops::max(x, axis, keepdim);
  Tensor saved_x = x.detach(), saved_y = y.detach();
  Shape kept = kept_shape(x.shape(), axis);
  return record("max", {x}, y, [=](const std::vector<Tensor>& g) {
    // The gradient goes to the maximal elements, split evenly among ties. Built on the host:
    // max is used for analysis, not on a training hot path.
    Tensor xs = ops::cast(saved_x, DType::f64).to(Device::cpu());
    Tensor ys =
        ops::expand(ops::cast(saved_y.reshape(kept), DType::f64).to(Device::cpu()), xs.shape());
    std::vector<double> xv = xs.to_vector<double>(), yv = ys.to_vector<double>();
    std::vector<double> mask(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) mask[i] = xv[i] == yv[i] ? 1.0 : 0.0;
    Tensor m = Tensor::from_vector(mask, xs.shape());
    Tensor ties = ops::expand(ops::sum(m, axis, true), xs.shape());
    Tensor share = ops::cast(ops::div(m, ties), saved_x.dtype()).to(saved_x.device());
    return std::vector<Tensor>{ops::mul(ops::expand(g[0].reshape(kept), saved_x.shape()), share)};
  });
}

Tensor softmax(const Tensor& x) {
  Tensor y = ops::softmax(x);
  Tensor saved = y.detach();
  return record("softmax", {x}, y, [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::softmax_backward(saved, g[0], false)};
  });
}

Tensor log_softmax(const Tensor& x) {
  Tensor y = ops::log_softmax(x);
  Tensor saved = y.detach();
  return record("log_softmax", {x}, y, [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::softmax_backward(saved, g[0], true)};
  });
}

}  // namespace infllm
