// SwiGLU MLP: down(silu(gate(x)) * up(x)) with gate and up fused into one projection.
#pragma once

#include "layers/linear.h"
#include "layers/model_config.h"

namespace infllm {

class MLP : public Module {
 public:
  MLP(ParameterFactory& factory, const ModelConfig& config);
  Tensor forward(const Tensor& x) const;

 private:
  Linear& gate_up_;  // [2 * ffn_hidden, d_model]: gate rows then up rows
  Linear& down_;     // [d_model, ffn_hidden], init scaled by 1/sqrt(2 n_layers)
};

}  // namespace infllm
