// Times generation with the KV cache (TransformerLM::prefill + decode_step, as `infllm generate`
// runs it) on a recipe's model shape with random weights: per prompt length and attention mode,
// the prefill, then greedy decode steps (each ends in the host reading the logits, as generate
// does). Prints one JSON line per case, comparable with `bench/torch_peer.py decode`:
//   {"bench": "decode", "impl": "infllm", "mode", "prompt", "new_tokens", "prefill_s",
//    "ms_per_token", "tokens_per_s", "peak_mem_GB", "device"}
// new_tokens counts the prefill's token: 1 + (new_tokens - 1) decode steps, timed together;
// ms_per_token and tokens_per_s are over the decode steps, after `--warmup` untimed ones.
//   bench_decode [--recipe recipes/bench200m.yaml] [--prompts 32768,65536,131072]
//                [--tokens 256] [--modes dense,sparse] [--warmup 4] [--device auto]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "bench/bench_options.h"
#include "core/cuda/allocator.h"
#include "core/device.h"
#include "core/ops.h"
#include "layers/transformer.h"
#include "train/recipe.h"
#include "train/run_setup.h"

using namespace infllm;

namespace {

struct Options {
  std::string recipe = "recipes/bench200m.yaml";
  std::vector<int> prompts = {32768, 65536, 131072};
  std::vector<std::string> modes = {"dense", "sparse"};
  std::string device = "auto";
  int tokens = 256, warmup = 4;
};

std::vector<std::string> split_names(const char* text) {
  std::vector<std::string> out;
  std::string name;
  for (const char* p = text;; ++p) {
    if (*p == ',' || *p == '\0') {
      if (!name.empty()) out.push_back(name);
      name.clear();
      if (*p == '\0') return out;
    } else {
      name += *p;
    }
  }
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int32_t argmax(const Tensor& logits) {
  const std::vector<float> x = ops::cast(logits, DType::f32).to_vector<float>();
  return int32_t(std::max_element(x.begin(), x.end()) - x.begin());
}

void run_case(TransformerLM& model, Device device, const std::string& mode, int prompt,
              const Options& o) {
  AttentionOptions attention = model.config().attention;
  attention.mode = from_string<attention::AttentionMode>(mode, "--modes");
  model.set_attention(attention);
  std::mt19937 gen(static_cast<uint32_t>(prompt));
  std::vector<int32_t> tokens(static_cast<size_t>(prompt));
  for (int32_t& t : tokens) t = int32_t(gen() % uint32_t(model.config().vocab_size));
  if (device.is_cuda()) cuda::reset_peak_memory(device.index);

  KvCache cache = model.make_cache(int64_t(prompt) + o.warmup + o.tokens);
  auto start = std::chrono::steady_clock::now();
  int32_t next = argmax(model.prefill(Tensor::from_vector(tokens, {1, prompt}, device), cache));
  const double prefill_s = seconds_since(start);
  for (int i = 0; i < o.warmup; ++i) next = argmax(model.decode_step(next, cache));
  const int steps = std::max(1, o.tokens - 1);
  start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) next = argmax(model.decode_step(next, cache));
  const double decode_s = seconds_since(start);
  const double peak_gb =
      device.is_cuda() ? double(cuda::memory_stats(device.index).peak) / 1e9 : 0.0;
  std::printf(
      "{\"bench\": \"decode\", \"impl\": \"infllm\", \"mode\": \"%s\", \"prompt\": %d, "
      "\"new_tokens\": %d, \"prefill_s\": %.3f, \"ms_per_token\": %.3f, \"tokens_per_s\": %.1f, "
      "\"peak_mem_GB\": %.2f, \"device\": \"%s\"}\n",
      mode.c_str(), prompt, o.tokens, prefill_s, decode_s / steps * 1e3, steps / decode_s, peak_gb,
      device.str().c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!bench::parse_options(argc, argv, "bench_decode",
                            {{"--recipe", [&](const char* v) { o.recipe = v; }},
                             {"--prompts", bench::list_option(o.prompts)},
                             {"--tokens", bench::int_option(o.tokens)},
                             {"--modes", [&](const char* v) { o.modes = split_names(v); }},
                             {"--warmup", bench::int_option(o.warmup)},
                             {"--device", [&](const char* v) { o.device = v; }}}))
    return 2;
  try {
    train::ValidateOptions validate;
    validate.check_files = false;
    const train::Recipe recipe = train::load_recipe(o.recipe, {}, validate);
    const Device device = parse_device(o.device);
    autograd::NoGradGuard no_grad;
    TransformerLM model(recipe.model, recipe.train.seed, device,
                        train::compute_dtype(recipe, device));
    for (int prompt : o.prompts)
      for (const std::string& mode : o.modes) run_case(model, device, mode, prompt, o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_decode: %s\n", e.what());
    return 1;
  }
  return 0;
}
