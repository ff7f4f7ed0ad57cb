// Shape functions: their gradients route values back to where they came from.
#include "autograd/functions.h"
#include "autograd/node.h"

namespace infllm {

using autograd::record;

Tensor reshape(const Tensor& x, const Shape& shape) {
  Shape from = x.shape();
  return record("reshape", {x}, x.reshape(shape), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{g[0].reshape(from)};
  });
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& order) {
  std::vector<int64_t> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    inverse[order[i] < 0 ? order[i] + int64_t(order.size()) : order[i]] = int64_t(i);
  }
  return record("permute", {x}, x.permute(order), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{g[0].permute(inverse)};
  });
}

Tensor transpose(const Tensor& x, int64_t a, int64_t b) {
  return record("transpose", {x}, x.transpose(a, b), [=](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{g[0].transpose(a, b)};
  });
}

Tensor slice(const Tensor& x, int64_t axis, int64_t begin, int64_t end) {
  Shape shape = x.shape();
  DType dtype = x.dtype();
  Device device = x.device();
  return record("slice", {x}, x.slice(axis, begin, end), [=](const std::vector<Tensor>& g) {
    Tensor dx = ops::zeros(shape, dtype, device);
    Tensor window = dx.slice(axis, begin, end);
    copy_into(g[0], window);
    return std::vector<Tensor>{dx};
  });
}

Tensor concat(const std::vector<Tensor>& parts, int64_t axis) {
  std::vector<int64_t> sizes;
  for (const Tensor& p : parts) sizes.push_back(p.size(axis));
  return record("concat", parts, ops::concat(parts, axis), [=](const std::vector<Tensor>& g) {
    std::vector<Tensor> grads;
    int64_t begin = 0;
    for (int64_t size : sizes) {
      grads.push_back(g[0].slice(axis, begin, begin + size));
      begin += size;
    }
    return grads;
  });
}

Tensor contiguous(const Tensor& x) {
  return record("contiguous", {x}, x.contiguous(),
                [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0]}; });
}

}  // namespace infllm
