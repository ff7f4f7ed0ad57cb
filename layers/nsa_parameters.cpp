#include "layers/nsa_parameters.h"

#include "autograd/functions.h"

namespace infllm {

NsaCompressor::NsaCompressor(ParameterFactory& factory, int64_t n_kv_heads, int64_t kernel_size,
                             int64_t head_dim, double init_std)
    : pe(factory.normal({n_kv_heads, kernel_size, head_dim}, init_std)),
      w1(factory.normal({n_kv_heads, head_dim, kernel_size * head_dim}, init_std)),
      w2(factory.normal({n_kv_heads, head_dim, head_dim}, init_std)) {
  register_parameter("pe", pe);
  register_parameter("w1", w1);
  register_parameter("w2", w2);
}

NsaParameters::NsaParameters(ParameterFactory& factory, const ModelConfig& config)
    : n_heads_(config.n_heads),
      compress_k_(register_module(
          "compress_k", std::make_unique<NsaCompressor>(factory, config.n_kv_heads,
                                                        config.attention.sparse.kernel_size,
                                                        config.head_dim, config.init_std))),
      compress_v_(register_module(
          "compress_v", std::make_unique<NsaCompressor>(factory, config.n_kv_heads,
                                                        config.attention.sparse.kernel_size,
                                                        config.head_dim, config.init_std))),
      gate_(register_module(
          "gate",
          std::make_unique<Linear>(factory, config.d_model, 3 * config.n_heads, config.init_std))) {
}

Tensor NsaParameters::gate_logits(const Tensor& x) const {
  return reshape(gate_.forward(x), {x.size(0), x.size(1), n_heads_, 3});
}

}  // namespace infllm
