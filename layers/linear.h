// Linear layer without bias: y = x @ W^T with W [out_features, in_features].
#pragma once

#include "layers/module.h"

namespace infllm {

class Linear : public Module {
 public:
  Linear(ParameterFactory& factory, int64_t in_features, int64_t out_features, double init_std);
  Tensor forward(const Tensor& x) const;  // [..., in] -> [..., out]

  Tensor weight;
};

}  // namespace infllm
