// Module / Parameter, in PyTorch's vocabulary: a module owns named parameters (leaf tensors
// with requires_grad) and child modules; named_parameters() walks them in registration order
// with dotted names ("blocks.3.attention.wqkv.weight") - the names checkpoints use.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/named_parameter.h"
#include "core/tensor.h"

namespace infllm {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  std::vector<NamedParameter> named_parameters();
  int64_t num_parameters();
  void zero_grad();

 protected:
  // `slot` must be a member of the derived module (its address is kept).
  void register_parameter(std::string name, Tensor& slot);
  template <class M>
  M& register_module(std::string name, std::unique_ptr<M> child) {
    M& ref = *child;
    children_.emplace_back(std::move(name), std::move(child));
    return ref;
  }

 private:
  std::vector<NamedParameter> parameters_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
};

// Creates parameters the same way on every device: values are drawn in f32 from Philox with
// (seed, running offset), so a CPU run and a GPU run start from identical weights, then cast
// to the compute dtype.
class ParameterFactory {
 public:
  ParameterFactory(uint64_t seed, Device device, DType dtype)
      : seed_(seed), device_(device), dtype_(dtype) {}
  Tensor normal(const Shape& shape, double std);
  Tensor ones(const Shape& shape);
  Device device() const { return device_; }
  DType dtype() const { return dtype_; }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
  Device device_;
  DType dtype_;
};

}  // namespace infllm
