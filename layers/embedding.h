// Token embedding: table [V, C]; also serves as the LM head when embeddings are tied.
#pragma once

#include "layers/module.h"

namespace infllm {

class Embedding : public Module {
 public:
  Embedding(ParameterFactory& factory, int64_t vocab_size, int64_t dim, double init_std);
  Tensor forward(const Tensor& tokens) const;  // i32 [B, T] -> [B, T, C]

  Tensor weight;
};

}  // namespace infllm
