#include "layers/module.h"

#include "core/ops.h"

namespace infllm {

void Module::register_parameter(std::string name, Tensor& slot) {
  parameters_.emplace_back(std::move(name), &slot);
}

std::vector<NamedParameter> Module::named_parameters() {
  std::vector<NamedParameter> all = parameters_;
  for (auto& [prefix, child] : children_) {
    for (auto& [name, tensor] : child->named_parameters())
      all.emplace_back(prefix + "." + name, tensor);
  }
  return all;
}

int64_t Module::num_parameters() {
  int64_t n = 0;
  for (auto& [name, tensor] : named_parameters()) n += tensor->numel();
  return n;
}

void Module::zero_grad() {
  for (auto& [name, tensor] : named_parameters()) tensor->set_grad(Tensor());
}

Tensor ParameterFactory::normal(const Shape& shape, double std) {
  Tensor t = ops::cast(ops::normal(shape, seed_, offset_, 0.0, std, DType::f32, device_), dtype_);
  offset_ += uint64_t(shape_numel(shape));
  t.set_requires_grad(true);
  return t;
}

Tensor ParameterFactory::ones(const Shape& shape) {
  Tensor t = ops::full(shape, 1.0, dtype_, device_);
  t.set_requires_grad(true);
  return t;
}

}  // namespace infllm
