#include "train/attention_bench.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include "attention/attention.h"
#include "attention/nsa.h"
#include "autograd/engine.h"
#include "autograd/functions.h"
#include "autograd/node.h"
#include "core/cuda/stream.h"
#include "core/error.h"
#include "core/ops.h"

namespace infllm::train {

std::string attention_path(const ModelConfig& model, int64_t T) {
  const AttentionOptions& a = model.attention;
  if (!attention::use_sparse(a.mode, int(T), a.sparse.dense_len)) return "dense";
  return a.variant == attention::AttentionVariant::nsa ? "nsa" : "infllm_v2";
}

namespace {

// The median of `steps` timings of `run` (after `warmup` untimed calls), each ended by a device
// synchronization so that the GPU's queued work is inside it.
double median_ms(const std::function<void()>& run, Device device, int64_t steps, int64_t warmup) {
  std::vector<double> times;
  for (int64_t i = 0; i < warmup + steps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    if (device.is_cuda()) cuda::synchronize(device.index);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (i >= warmup) times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

AttentionBenchResult bench_attention_core(const ModelConfig& model_in, int64_t B, int64_t T,
                                          Device device, DType dtype, int64_t steps, int64_t warmup,
                                          uint64_t seed) {
  INFLLM_CHECK(B >= 1 && T >= 2 && steps >= 1 && warmup >= 0,
               "infllm bench --attention-only: bad shape or counts B=", B, " T=", T,
               " steps=", steps, " warmup=", warmup);
  const ModelConfig model = with_derived_sizes(model_in);
  AttentionBenchResult r;
  r.path = attention_path(model, T);
  r.B = B, r.T = T, r.Hq = model.n_heads, r.Hkv = model.n_kv_heads, r.D = model.head_dim;
  const int64_t Hq = r.Hq, Hkv = r.Hkv, D = r.D;
  const AttentionOptions& options = model.attention;
  const bool nsa = r.path == "nsa";
  uint64_t stream = 0;  // Philox offsets: every tensor its own numbers
  auto draw = [&](const Shape& shape, double std) {
    Tensor t = ops::normal(shape, seed, stream++ << 40, 0.0, std, dtype, device);
    t.set_requires_grad(true);
    return t;
  };
  Tensor qkv = draw({B, T, Hq + 2 * Hkv, D}, 1.0);
  Tensor gates, dout = ops::normal({B, T, Hq, D}, seed, stream++ << 40, 0.0, 1.0, dtype, device);
  NsaWeights weights;
  if (nsa) {
    attention::check_nsa_config("infllm bench --attention-only", options.nsa, options.sparse);
    const int64_t l = options.sparse.kernel_size;
    gates = draw({B, T, Hq, 3}, 1.0);
    for (NsaCompression* c : {&weights.key, &weights.value})
      *c = {draw({Hkv, l, D}, model.init_std), draw({Hkv, D, l * D}, model.init_std),
            draw({Hkv, D, D}, model.init_std)};
  }
  // SelfAttention::attend's core: the packed call, or NSA on the head ranges of qkv.
  auto attend = [&] {
    if (!nsa) return causal_attention_packed(qkv, Hq, Hkv, options);
    return nsa_attention(slice(qkv, 2, 0, Hq), slice(qkv, 2, Hq, Hq + Hkv),
                         slice(qkv, 2, Hq + Hkv, Hq + 2 * Hkv), gates, weights, options.sparse,
                         options.nsa);
  };
  r.forward_ms = median_ms(
      [&] {
        autograd::NoGradGuard no_grad;
        attend();
      },
      device, steps, warmup);
  r.forward_backward_ms = median_ms([&] { backward({attend()}, {dout}); }, device, steps, warmup);
  return r;
}

}  // namespace infllm::train
