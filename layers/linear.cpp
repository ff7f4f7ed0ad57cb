#include "layers/linear.h"

#include "autograd/functions.h"

namespace infllm {

Linear::Linear(ParameterFactory& factory, int64_t in_features, int64_t out_features,
               double init_std)
    : weight(factory.normal({out_features, in_features}, init_std)) {
  register_parameter("weight", weight);
}

Tensor Linear::forward(const Tensor& x) const {
  INFLLM_CHECK(x.size(-1) == weight.size(1), "Linear: input ", x.str(), " has ", x.size(-1),
               " features, the layer expects ", weight.size(1));
  Shape out_shape = x.shape();
  out_shape.back() = weight.size(0);
  Tensor rows = reshape(x, {-1, weight.size(1)});
  return reshape(matmul(rows, weight, false, true), out_shape);
}

}  // namespace infllm
