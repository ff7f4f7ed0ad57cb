#include "layers/embedding.h"

#include "autograd/functions.h"

namespace infllm {

Embedding::Embedding(ParameterFactory& factory, int64_t vocab_size, int64_t dim, double init_std)
    : weight(factory.normal({vocab_size, dim}, init_std)) {
  register_parameter("weight", weight);
}

Tensor Embedding::forward(const Tensor& tokens) const {
  return embedding(weight, tokens);
}

}  // namespace infllm
