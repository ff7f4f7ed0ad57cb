// Tensor = shared storage + shape + strides (in elements) + offset + dtype + device.
// Views (view, reshape, permute, transpose, slice) share storage; kernels take contiguous
// inputs, so ops call contiguous() at their boundary. Autograd state (requires_grad, grad,
// grad_fn) rides along in AutogradMeta; the engine that uses it lives in autograd/.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/storage.h"

namespace infllm {

using Shape = std::vector<int64_t>;

namespace autograd {
class Node;
}
struct AutogradMeta;

std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu(),
                      bool pinned = false);
  // A tensor holding `values` (host data), copied to `device`.
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t dim() const { return int64_t(shape_.size()); }
  int64_t size(int64_t axis) const;
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Pointer to the first element (storage + offset).
  void* data_ptr() const;
  template <class T>
  T* data() const {
    INFLLM_CHECK(dtype_of<T>() == dtype_, "data<", dtype_name(dtype_of<T>()), ">() on a ",
                 dtype_name(dtype_), " tensor");
    return static_cast<T*>(data_ptr());
  }

  // Views: no copy, no autograd (the differentiable versions live in autograd/).
  Tensor view(const Shape& shape) const;     // requires contiguous; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // view if contiguous, else a copy
  Tensor permute(const std::vector<int64_t>& order) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor slice(int64_t axis, int64_t begin, int64_t end) const;
  Tensor select(int64_t axis, int64_t index) const;  // slice of size 1, axis removed
  // Same storage and offset, any shape/strides (stride 0 broadcasts). Unchecked: for kernels.
  Tensor as_strided(const Shape& shape, const Shape& strides) const;

  Tensor contiguous() const;
  Tensor to(Device device) const;  // copy across devices (no-op view if already there)
  Tensor clone() const;            // contiguous deep copy on the same device
  Tensor detach() const;           // same data, no autograd state
  template <class T>
  std::vector<T> to_vector() const;  // contiguous host copy
  double item() const;               // single-element tensor as double

  // Autograd state.
  bool requires_grad() const;
  Tensor& set_requires_grad(bool requires_grad);
  Tensor grad() const;
  void set_grad(const Tensor& grad);
  std::shared_ptr<autograd::Node> grad_fn() const;
  const std::shared_ptr<AutogradMeta>& autograd_meta() const { return meta_; }
  AutogradMeta& ensure_autograd_meta();

  std::string str() const;  // "Tensor[2, 3] f32 cpu"

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
  Device device_;
  std::shared_ptr<AutogradMeta> meta_;
};

// Per-tensor autograd state. A tensor that is an op's output points to the node that made it
// (grad_fn, output_index); a leaf that requires grad accumulates into `grad`.
struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<autograd::Node> grad_fn;
  int output_index = 0;
  // Called by the engine each time a gradient has been added into a leaf's grad (data
  // parallelism starts a bucket's all-reduce once all its gradients are in).
  std::function<void()> on_grad_accumulated;
};

Shape contiguous_strides(const Shape& shape);

// bf16 elements as raw 16-bit patterns, the form CUDA kernel headers take (they stay
// includable from plain C++).
inline uint16_t* bf16_bits(const Tensor& t) {
  return &t.data<bf16>()->bits;
}

// Uninitialized device scratch of at least `bytes` bytes (for kernels' workspaces).
inline Tensor scratch(size_t bytes, Device device) {
  return Tensor::empty({int64_t((bytes + 3) / 4)}, DType::i32, device);
}

// Copies src into dst (same shape and dtype; any devices; dst may be a strided view on CPU).
void copy_into(const Tensor& src, Tensor& dst);

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  INFLLM_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
               " values for shape ", shape_str(shape));
  Tensor host = empty(shape, dtype_of<T>(), Device::cpu());
  std::copy(values.begin(), values.end(), host.data<T>());
  return host.to(device);
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = to(Device::cpu()).contiguous();
  const T* p = host.data<T>();
  return std::vector<T>(p, p + host.numel());
}

}  // namespace infllm
