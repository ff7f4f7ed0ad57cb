#include "layers/mlp.h"

#include <cmath>

#include "layers/swiglu.h"

namespace infllm {

MLP::MLP(ParameterFactory& factory, const ModelConfig& config)
    : gate_up_(register_module(
          "gate_up", std::make_unique<Linear>(factory, config.d_model, 2 * config.ffn_hidden,
                                              config.init_std))),
      down_(register_module(
          "down",
          std::make_unique<Linear>(factory, config.ffn_hidden, config.d_model,
                                   config.init_std / std::sqrt(2.0 * double(config.n_layers))))) {}

Tensor MLP::forward(const Tensor& x) const {
  return down_.forward(swiglu(gate_up_.forward(x)));
}

}  // namespace infllm
