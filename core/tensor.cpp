#include "core/tensor.h"

#include <cstring>
#include <numeric>
#include <sstream>

#include "core/dispatch.h"
#include "core/kernels/elementwise.h"
#if INFLLM_WITH_CUDA
#include <cuda_runtime.h>

#include "core/cuda/stream.h"
#include "core/cuda_check.h"
#endif

namespace infllm {

std::string shape_str(const Shape& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

int64_t shape_numel(const Shape& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t(1), std::multiplies<int64_t>());
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (int64_t i = int64_t(shape.size()) - 1; i >= 0; --i) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device, bool pinned) {
  for (int64_t d : shape) {
    INFLLM_CHECK(d >= 0, "Tensor::empty: negative dimension in shape ", shape_str(shape));
  }
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ =
      std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), device, pinned);
  return t;
}

int64_t Tensor::size(int64_t axis) const {
  int64_t n = dim();
  INFLLM_CHECK(axis >= -n && axis < n, "size(", axis, ") of a ", n, "-d tensor ",
               shape_str(shape_));
  return shape_[axis < 0 ? axis + n : axis];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

void* Tensor::data_ptr() const {
  INFLLM_CHECK(defined(), "data_ptr() of an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * int64_t(dtype_size(dtype_));
}

Tensor Tensor::view(const Shape& shape) const {
  INFLLM_CHECK(is_contiguous(), "view", shape_str(shape), " of a non-contiguous tensor ",
               shape_str(shape_), ": call contiguous() or reshape()");
  Shape resolved = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < resolved.size(); ++i) {
    if (resolved[i] == -1) {
      INFLLM_CHECK(infer < 0, "view", shape_str(shape), ": more than one -1");
      infer = int64_t(i);
    } else {
      known *= resolved[i];
    }
  }
  if (infer >= 0) {
    INFLLM_CHECK(known > 0 && numel() % known == 0, "view", shape_str(shape),
                 ": cannot infer -1 for ", numel(), " elements");
    resolved[infer] = numel() / known;
  }
  INFLLM_CHECK(shape_numel(resolved) == numel(), "view: shape ", shape_str(shape), " has ",
               shape_numel(resolved), " elements but the tensor ", shape_str(shape_), " has ",
               numel());
  Tensor t = detach();
  t.shape_ = resolved;
  t.strides_ = contiguous_strides(resolved);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  return is_contiguous() ? view(shape) : contiguous().view(shape);
}

Tensor Tensor::permute(const std::vector<int64_t>& order) const {
  INFLLM_CHECK(int64_t(order.size()) == dim(), "permute: ", order.size(), " axes for a ", dim(),
               "-d tensor ", shape_str(shape_));
  Tensor t = detach();
  std::vector<bool> seen(order.size(), false);
  for (size_t i = 0; i < order.size(); ++i) {
    int64_t axis = order[i] < 0 ? order[i] + dim() : order[i];
    INFLLM_CHECK(axis >= 0 && axis < dim() && !seen[axis], "permute: bad axis order for ",
                 shape_str(shape_));
    seen[axis] = true;
    t.shape_[i] = shape_[axis];
    t.strides_[i] = strides_[axis];
  }
  return t;
}

Tensor Tensor::transpose(int64_t a, int64_t b) const {
  std::vector<int64_t> order(dim());
  std::iota(order.begin(), order.end(), 0);
  a = a < 0 ? a + dim() : a;
  b = b < 0 ? b + dim() : b;
  INFLLM_CHECK(a >= 0 && a < dim() && b >= 0 && b < dim(), "transpose(", a, ", ", b, ") of ",
               shape_str(shape_));
  std::swap(order[a], order[b]);
  return permute(order);
}

Tensor Tensor::slice(int64_t axis, int64_t begin, int64_t end) const {
  int64_t n = size(axis);
  axis = axis < 0 ? axis + dim() : axis;
  INFLLM_CHECK(0 <= begin && begin <= end && end <= n, "slice [", begin, ", ", end, ") of axis ",
               axis, " with size ", n, " in ", shape_str(shape_));
  Tensor t = detach();
  t.offset_ += begin * strides_[axis];
  t.shape_[axis] = end - begin;
  return t;
}

Tensor Tensor::select(int64_t axis, int64_t index) const {
  axis = axis < 0 ? axis + dim() : axis;
  Tensor t = slice(axis, index, index + 1);
  t.shape_.erase(t.shape_.begin() + axis);
  t.strides_.erase(t.strides_.begin() + axis);
  return t;
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides) const {
  Tensor t = detach();
  t.shape_ = shape;
  t.strides_ = strides;
  return t;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape_, dtype_, device_);
  INFLLM_DISPATCH(device_, copy_strided, *this, out);
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_, device_);
  copy_into(*this, out);
  return out;
}

Tensor Tensor::to(Device device) const {
  if (device == device_) return *this;
  Tensor out = empty(shape_, dtype_, device);
  copy_into(*this, out);
  return out;
}

Tensor Tensor::detach() const {
  Tensor t = *this;
  t.meta_.reset();
  return t;
}

double Tensor::item() const {
  INFLLM_CHECK(numel() == 1, "item() of a tensor with ", numel(), " elements ", shape_str(shape_));
  Tensor host = to(Device::cpu());
  return visit_dtype(dtype_, [&]<class T>() {
    T value = *host.data<T>();
    if constexpr (std::is_same_v<T, bf16>) {
      return double(bf16_to_float(value));
    } else {
      return double(value);
    }
  });
}

bool Tensor::requires_grad() const {
  return meta_ && meta_->requires_grad;
}

Tensor& Tensor::set_requires_grad(bool requires_grad) {
  INFLLM_CHECK(!requires_grad || is_floating(dtype_), "requires_grad on a ", dtype_name(dtype_),
               " tensor: only floating-point tensors have gradients");
  ensure_autograd_meta().requires_grad = requires_grad;
  return *this;
}

Tensor Tensor::grad() const {
  return meta_ ? meta_->grad : Tensor();
}

void Tensor::set_grad(const Tensor& grad) {
  ensure_autograd_meta().grad = grad;
}

std::shared_ptr<autograd::Node> Tensor::grad_fn() const {
  return meta_ ? meta_->grad_fn : nullptr;
}

AutogradMeta& Tensor::ensure_autograd_meta() {
  if (!meta_) meta_ = std::make_shared<AutogradMeta>();
  return *meta_;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return "Tensor" + shape_str(shape_) + " " + dtype_name(dtype_) + " " + device_.str();
}

void copy_into(const Tensor& src, Tensor& dst) {
  INFLLM_CHECK(src.shape() == dst.shape() && src.dtype() == dst.dtype(), "copy: source ", src.str(),
               " does not match destination ", dst.str());
  if (src.device() == dst.device()) {
    INFLLM_DISPATCH(dst.device(), copy_strided, src, dst);
    return;
  }
#if INFLLM_WITH_CUDA
  // Across devices: make both ends contiguous, then one cudaMemcpyAsync on the GPU's stream.
  Tensor from = src.contiguous();
  bool direct = dst.is_contiguous();
  Tensor to = direct ? dst : Tensor::empty(dst.shape(), dst.dtype(), dst.device());
  Device gpu = from.device().is_cuda() ? from.device() : to.device();
  auto stream = static_cast<cudaStream_t>(cuda::compute_stream(gpu.index));
  if (from.device().is_cuda() && to.device().is_cuda()) {
    CUDA_CHECK(cudaMemcpyPeerAsync(to.data_ptr(), to.device().index, from.data_ptr(),
                                   from.device().index, from.nbytes(), stream));
  } else {
    CUDA_CHECK(
        cudaMemcpyAsync(to.data_ptr(), from.data_ptr(), from.nbytes(), cudaMemcpyDefault, stream));
  }
  // Host memory may be reused by the caller right after return.
  CUDA_CHECK(cudaStreamSynchronize(stream));
  if (!direct) copy_into(to, dst);
#else
  require_device(src.device().is_cuda() ? src.device() : dst.device(), "copy");
#endif
}

}  // namespace infllm
