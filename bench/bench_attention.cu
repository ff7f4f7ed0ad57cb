// Times the CUDA attention kernels on MiniCPM4-8B's attention shape (B=1, Hq=32, Hkv=2, D=128):
// dense causal at 4K/16K/32K and InfLLM-V2 block-sparse (64 blocks of 64 per token: the first
// block, the 32 local blocks ending at the token's own, 31 random earlier ones) at 32K-128K.
// `--flex-mask` runs the sparse kernels on the mask torch_peer.py gives FlexAttention instead
// (random blocks shared by 128 query tokens), so both kernels do the same work.
// `--dq`, `--fwd`, `--dkdv`, `--copy` and `--exp2` pick the Hopper dense kernels
// (INFLLM_ATTENTION_DQ, _FWD, _DKDV, _COPY, _EXP2, set before each dense measurement), each a
// name, a comma list or all (both); every combination asked for is measured one after the other
// at each length, for an A/B in one process; without one the environment decides. The library
// defaults are dQ from the dK/dV pass (fused: the pipelined pass's bulk reductions, the row
// kernel's atomics with --dkdv rows or --copy cp_async), the warp-specialized pipelines
// (pipelined), their rings loaded by the TMA (tma) and the forward's exponentials on the
// special-function unit (mufu); the others: --dq pipelined (a dQ pass of its own) or separate
// (its row pass), --fwd rows, --dkdv rows, --copy cp_async, --exp2 fma8, fma4 or fma2 (a share of
// the forward's exponentials on the FMA pipe). Rows name the non-defaults: dense_dq_pipelined,
// dense_dq_separate, _fwd_rows, _dkdv_rows, _copy_cp_async, _exp2_fma4, ...
// Prints one JSON line per measurement, then a table. Median of CUDA-event-timed runs; memory as
// the tensors a caller holds (q, k, v, out, dout and gradients, lse, block lists) plus the peak
// scratch the kernels allocate themselves during one forward + backward.
//   bench_attention [--dense 4096,16384,32768] [--sparse 32768,65536,131072] [--b 1 --hq 32
//                   --hkv 2 --d 128] [--reps 10] [--flex-mask 65536,131072]
//                   [--dq fused|pipelined|separate|all] [--fwd pipelined|rows|both]
//                   [--dkdv pipelined|rows|both] [--copy tma|cp_async|both]
//                   [--exp2 mufu|fma8|fma4|fma2|all] (a list of "0" skips that mode)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attention/flash_attention.h"
#include "bench/bench_options.h"
#include "core/cuda_check.h"

using namespace infllm::attention;

namespace {

struct Options {
  std::vector<int> dense = {4096, 16384, 32768};
  std::vector<int> sparse = {32768, 65536, 131072};
  std::vector<int> flex_mask = {};
  int b = 1, hq = 32, hkv = 2, d = 128, reps = 10;
};

// One of the Hopper dense kernel choices the bench sweeps: its option, the environment variable it
// sets before each dense measurement, and its values (the library's default first). `option` as
// given: a value, a comma list, "all" or "both"; empty: the environment decides.
struct Choice {
  const char* flag;  // "--dq"
  const char* name;  // "dq": the JSON field, and "_dq_<value>" in a row's name off the default
  const char* variable;
  std::vector<std::string> values;
  std::string option;
};
enum ChoiceIndex { kDq, kFwd, kDkdv, kCopy, kExp2 };
std::vector<Choice> dense_choices() {
  return {{"--dq", "dq", "INFLLM_ATTENTION_DQ", {"fused", "pipelined", "separate"}, ""},
          {"--fwd", "fwd", "INFLLM_ATTENTION_FWD", {"pipelined", "rows"}, ""},
          {"--dkdv", "dkdv", "INFLLM_ATTENTION_DKDV", {"pipelined", "rows"}, ""},
          {"--copy", "copy", "INFLLM_ATTENTION_COPY", {"tma", "cp_async"}, ""},
          {"--exp2", "exp2", "INFLLM_ATTENTION_EXP2", {"mufu", "fma8", "fma4", "fma2"}, ""}};
}

// Uniform values in [-2, 2) from a counter hash: random data without a host round trip.
__global__ void fill_random(uint16_t* x, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = float(z >> 40) / float(1ull << 24) * 4.f - 2.f;
    x[i] = uint16_t(__float_as_uint(u) >> 16);
  }
}

// `count` distinct random blocks from 1 .. pool added to `chosen`.
void add_random_blocks(std::vector<int32_t>& chosen, int pool, size_t count, std::mt19937& gen) {
  for (const size_t target = chosen.size() + count; chosen.size() < target;) {
    const int j = 1 + int(gen() % uint32_t(pool));
    if (std::find(chosen.begin(), chosen.end(), j) == chosen.end()) chosen.push_back(j);
  }
}

// InfLLM-V2's worst case, each (token, group) on its own: the first block, the 32 local blocks
// ending at the token's own and random earlier ones, `topk` in all.
std::vector<int32_t> per_token_blocks(int t, int topk, std::mt19937& gen) {
  const int own = t / 64, local = 32;
  std::vector<int32_t> chosen;
  if (own + 1 <= topk) {
    for (int j = 0; j <= own; ++j) chosen.push_back(j);
    return chosen;
  }
  chosen.push_back(0);
  for (int j = own - local + 1; j <= own; ++j) chosen.push_back(j);
  add_random_blocks(chosen, own - local, size_t(topk) - chosen.size(), gen);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

// The mask torch_peer.py gives FlexAttention, in 64-token blocks: per 128-token query block the
// first 128 keys, the 16 128-token blocks ending at its own and up to topk/2 - 17 random earlier
// ones, shared by the block's 128 tokens and by every head. Blocks after a token's own are left
// out (they hold only future keys).
std::vector<int32_t> shared_128_blocks(int t, int topk) {
  const int own128 = t / 128, local = 16;
  std::vector<int32_t> chosen128 = {0};
  for (int j = std::max(1, own128 - local + 1); j <= own128; ++j) chosen128.push_back(j);
  if (own128 > local) {
    std::mt19937 gen(own128 * 7919u + 17u);
    const int pool = own128 - local;
    add_random_blocks(chosen128, pool, std::min<size_t>(pool, topk / 2 - chosen128.size()), gen);
  }
  std::sort(chosen128.begin(), chosen128.end());
  std::vector<int32_t> chosen;
  for (int j : chosen128)
    for (int half : {2 * j, 2 * j + 1})
      if (half <= t / 64) chosen.push_back(half);
  return chosen;
}

// Block lists of `topk` entries (-1 padded) for every (token, group); returns the number of
// visible (token, key) pairs summed over tokens and KV groups, for the FLOP count.
double make_block_lists(int T, int hkv, int topk, bool shared_128, std::vector<int32_t>& blocks) {
  blocks.assign(size_t(T) * hkv * topk, -1);
  double visible = 0;
  for (int t = 0; t < T; ++t) {
    std::mt19937 gen(t * 7919u + 17u);
    for (int g = 0; g < hkv; ++g) {
      const int own = t / 64;
      const std::vector<int32_t> chosen =
          shared_128 ? shared_128_blocks(t, topk) : per_token_blocks(t, topk, gen);
      for (size_t i = 0; i < chosen.size(); ++i) {
        blocks[(size_t(t) * hkv + g) * topk + i] = chosen[i];
        visible += chosen[i] == own ? t - own * 64 + 1 : 64;
      }
    }
  }
  return visible;
}

template <class F>
float median_ms(F&& f, int reps) {
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < 2; ++i) f();  // warm-up
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> times;
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(start));
    f();
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

struct Row {
  std::string mode;
  std::vector<std::string> kernels;  // per dense_choices() entry: what ran
  int L;
  float fwd_ms, fwd_bwd_ms;
  double fwd_tflops, fwd_bwd_tflops;
  double tensors_mib, scratch_mib;  // the caller's tensors; the kernels' own peak allocations
};

// Peak bytes that f's kernels take for themselves (delta, the sparse index, f32 partial sums: all
// stream-ordered allocations from the device's default pool), from the pool's high-water mark.
template <class F>
double scratch_peak_mib(F&& f) {
  cudaMemPool_t pool;
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
  CUDA_CHECK(cudaDeviceSynchronize());
  uint64_t high = 0;
  CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &high));
  f();
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &high));
  return double(high) / 1048576.0;
}

enum class Mode { dense, sparse, flex_mask };

// kernels: the dense kernel choices (a value per dense_choices() entry), already in the
// environment; ignored by the sparse modes, which have one kernel per pass.
Row run(const Options& o, int L, Mode mode, const std::vector<Choice>& choices,
        const std::vector<std::string>& kernels) {
  const bool sparse = mode != Mode::dense;
  const AttentionShape shape{o.b, L, o.hq, o.hkv, o.d, float(1.0 / std::sqrt(double(o.d)))};
  const size_t nq = size_t(o.b) * L * o.hq * o.d, nk = size_t(o.b) * L * o.hkv * o.d;
  uint16_t *q, *k, *v, *out, *dout, *dq, *dk, *dv;
  float* lse;
  for (uint16_t** p : {&q, &out, &dout, &dq}) CUDA_CHECK(cudaMalloc(p, nq * 2));
  for (uint16_t** p : {&k, &v, &dk, &dv}) CUDA_CHECK(cudaMalloc(p, nk * 2));
  CUDA_CHECK(cudaMalloc(&lse, size_t(o.b) * L * o.hq * 4));
  uint64_t seed = 1;
  for (auto [p, n] : {std::pair{q, nq}, {k, nk}, {v, nk}, {dout, nq}}) {
    fill_random<<<4096, 256>>>(p, n, seed++);
    CUDA_CHECK_LAUNCH();
  }

  // Causal dense: 2 matmuls of L^2/2 x D per head; sparse: the same over the visible pairs.
  double fwd_flops = 2.0 * o.b * L * double(L) * o.d * o.hq;
  BlockList list;
  int32_t* gblocks = nullptr;
  if (sparse) {
    std::vector<int32_t> blocks;
    const double visible = o.b * make_block_lists(L, o.hkv, 64, mode == Mode::flex_mask, blocks);
    fwd_flops = 4.0 * visible * o.d * (o.hq / o.hkv);
    std::vector<int32_t> one = blocks;  // every sequence of the batch selects the same blocks
    for (int i = 1; i < o.b; ++i) blocks.insert(blocks.end(), one.begin(), one.end());
    CUDA_CHECK(cudaMalloc(&gblocks, blocks.size() * 4));
    CUDA_CHECK(cudaMemcpy(gblocks, blocks.data(), blocks.size() * 4, cudaMemcpyHostToDevice));
    list = {gblocks, 64, 64};
  }
  auto forward = [&] { cuda::attention_forward(shape, q, k, v, list, out, lse, nullptr); };
  auto backward = [&] {
    cuda::attention_backward(shape, q, k, v, out, lse, dout, list, dq, dk, dv, nullptr);
  };
  Row r;
  if (sparse) {  // the Hopper sparse passes: fused dQ, cp.async copies, exponentials on the MUFU
    r.mode = mode == Mode::sparse ? "sparse_top64" : "flex_mask";
    r.kernels = {"fused", "sparse", "sparse", "cp_async", "mufu"};
  } else {  // "dense", then _<choice>_<value> for each choice off the library's default
    r.mode = "dense";
    r.kernels = kernels;
    for (size_t i = 0; i < choices.size(); ++i)
      if (r.kernels[i] != choices[i].values.front())
        r.mode += std::string("_") + choices[i].name + "_" + r.kernels[i];
  }
  r.L = L;
  r.fwd_ms = median_ms(forward, o.reps);
  r.fwd_bwd_ms = median_ms(
      [&] {
        forward();
        backward();
      },
      std::max(3, o.reps / 2));
  r.fwd_tflops = fwd_flops / r.fwd_ms / 1e9;
  r.fwd_bwd_tflops = 3.5 * fwd_flops / r.fwd_bwd_ms / 1e9;
  // q, out, dout, dq; k, v, dk, dv; lse; the block lists.
  r.tensors_mib = (4.0 * nq * 2 + 4.0 * nk * 2 + size_t(o.b) * L * o.hq * 4.0 +
                   (sparse ? size_t(o.b) * L * o.hkv * 64 * 4.0 : 0.0)) /
                  1048576.0;
  r.scratch_mib = scratch_peak_mib([&] {
    forward();
    backward();
  });
  std::printf("{\"bench\":\"attention\",\"mode\":\"%s\",", r.mode.c_str());
  for (size_t i = 0; i < choices.size(); ++i)
    std::printf("\"%s\":\"%s\",", choices[i].name, r.kernels[i].c_str());
  std::printf(
      "\"B\":%d,\"L\":%d,\"hq\":%d,\"hkv\":%d,\"d\":%d,\"fwd_ms\":%.4f,\"fwd_bwd_ms\":%.4f,"
      "\"fwd_tflops\":%.1f,\"fwd_bwd_tflops\":%.1f,\"tensors_mib\":%.1f,\"scratch_mib\":%.1f}\n",
      o.b, L, o.hq, o.hkv, o.d, r.fwd_ms, r.fwd_bwd_ms, r.fwd_tflops, r.fwd_bwd_tflops,
      r.tensors_mib, r.scratch_mib);
  std::fflush(stdout);
  for (void* p : {(void*)q, (void*)k, (void*)v, (void*)out, (void*)dout, (void*)dq, (void*)dk,
                  (void*)dv, (void*)lse, (void*)gblocks})
    CUDA_CHECK(cudaFree(p));
  return r;
}

// The values `choice.option` asks for: "all" or "both" gives every one, a comma list those listed;
// without the option, the one the environment selects (the library's default when unset). False,
// after saying why, for a name not among the choice's values.
bool values_to_sweep(const Choice& choice, std::vector<std::string>& out) {
  const std::string& option = choice.option;
  if (option == "all" || option == "both") {
    out = choice.values;
    return true;
  }
  if (option.empty()) {
    const char* env = std::getenv(choice.variable);
    out = {env != nullptr && *env != '\0' ? env : choice.values.front()};
    return true;
  }
  out.clear();
  for (size_t at = 0; at <= option.size();) {
    const size_t comma = std::min(option.find(',', at), option.size());
    out.push_back(option.substr(at, comma - at));
    at = comma + 1;
  }
  for (const std::string& name : out)
    if (std::find(choice.values.begin(), choice.values.end(), name) == choice.values.end()) {
      std::string names;
      for (const std::string& c : choice.values) names += c + ", ";
      std::fprintf(stderr, "bench_attention: %s %s; use %sall or a comma list of them\n",
                   choice.flag, option.c_str(), names.c_str());
      return false;
    }
  return true;
}

// Every combination of the choices' values (the last choice varying fastest).
std::vector<std::vector<std::string>> combinations(
    const std::vector<std::vector<std::string>>& values) {
  std::vector<std::vector<std::string>> out = {{}};
  for (const std::vector<std::string>& axis : values) {
    std::vector<std::vector<std::string>> longer;
    for (const std::vector<std::string>& head : out)
      for (const std::string& value : axis) {
        longer.push_back(head);
        longer.back().push_back(value);
      }
    out = std::move(longer);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::vector<Choice> choices = dense_choices();
  using namespace infllm::bench;
  if (!parse_options(argc, argv, "bench_attention",
                     {{"--dense", list_option(o.dense)},
                      {"--sparse", list_option(o.sparse)},
                      {"--flex-mask", list_option(o.flex_mask)},
                      {"--b", int_option(o.b)},
                      {"--hq", int_option(o.hq)},
                      {"--hkv", int_option(o.hkv)},
                      {"--d", int_option(o.d)},
                      {"--reps", int_option(o.reps)},
                      {"--dq", [&choices](const char* v) { choices[kDq].option = v; }},
                      {"--fwd", [&choices](const char* v) { choices[kFwd].option = v; }},
                      {"--dkdv", [&choices](const char* v) { choices[kDkdv].option = v; }},
                      {"--copy", [&choices](const char* v) { choices[kCopy].option = v; }},
                      {"--exp2", [&choices](const char* v) { choices[kExp2].option = v; }}}))
    return 2;
  // The dense kernels each option asks for; without it, the one the environment selects.
  std::vector<std::vector<std::string>> values(choices.size());
  for (size_t i = 0; i < choices.size(); ++i)
    if (!values_to_sweep(choices[i], values[i])) return 2;
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("{\"gpu\":\"%s\"}\n", prop.name);
  std::vector<Row> rows;
  try {
    for (int L : o.dense)
      for (const std::vector<std::string>& kernels : combinations(values)) {
        for (size_t i = 0; i < choices.size(); ++i)
          if (!choices[i].option.empty()) setenv(choices[i].variable, kernels[i].c_str(), 1);
        rows.push_back(run(o, L, Mode::dense, choices, kernels));
      }
    for (int L : o.sparse) rows.push_back(run(o, L, Mode::sparse, choices, {}));
    for (int L : o.flex_mask) rows.push_back(run(o, L, Mode::flex_mask, choices, {}));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
  std::printf("\n%-44s %7s %10s %12s %10s %12s %12s %12s\n", "mode", "L", "fwd ms", "fwd+bwd ms",
              "fwd TF/s", "f+b TF/s", "tensors MiB", "scratch MiB");
  for (const Row& r : rows)
    std::printf("%-44s %7d %10.3f %12.3f %10.1f %12.1f %12.1f %12.1f\n", r.mode.c_str(), r.L,
                r.fwd_ms, r.fwd_bwd_ms, r.fwd_tflops, r.fwd_bwd_tflops, r.tensors_mib,
                r.scratch_mib);
  return 0;
}
