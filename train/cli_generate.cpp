// infllm generate CHECKPOINT [--prompt TEXT | --prompt-ids IDS] [--tokens N] [--temperature X]
//                 [--seed S] [--device D] [--no-cache] [--tokenizer T]
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "autograd/node.h"
#include "core/ops.h"
#include "core/rng.h"
#include "layers/kv_cache.h"
#include "train/cli_args.h"
#include "train/commands.h"
#include "train/load_model.h"
#include "train/text_tokenizer.h"

namespace infllm::train {
namespace {

constexpr const char* kHelp = R"(usage: infllm generate CHECKPOINT [options]

Samples text from a checkpoint (a file, or RUN/checkpoints/latest) with its tokenizer: the
byte tokenizer, or the tokenizer.json of the model it was imported or finetuned from.
  --prompt TEXT        text to continue (default: empty, the model starts a document);
                       byte tokenizer only
  --prompt-ids IDS     token ids to continue, as given (no BOS added): 1,2,3 (made by the
                       tokenizers library with a one-line python3 -c, docs/interop.md)
  --tokenizer T        byte, or a folder with tokenizer.json (default: the checkpoint's)
  --tokens N           tokens to generate (default 200)
  --temperature X      0 = greedy; otherwise sample from softmax(logits / X) (default 0.8)
  --seed S             sampling seed (default 0)
  --device D           auto | cpu | cuda | cuda:N (default auto)
  --no-cache           recompute the whole context for every token instead of decoding with a
                       KV cache (the same tokens, slower; for checking)
)";

// Index drawn from softmax(logits / temperature); the argmax when temperature is 0.
int32_t pick_token(const std::vector<float>& logits, double temperature, uint64_t seed,
                   uint64_t counter) {
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) best = logits[i] > logits[best] ? i : best;
  if (temperature <= 0) return int32_t(best);
  std::vector<double> weights(logits.size());
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    weights[i] = std::exp((double(logits[i]) - logits[best]) / temperature);
    total += weights[i];
  }
  double u = double(philox_uniform(counter, seed)) * total;
  for (size_t i = 0; i < weights.size(); ++i) {
    if ((u -= weights[i]) <= 0) return int32_t(i);
  }
  return int32_t(best);
}

// Calls next_token(logits [V]) for each new token until it returns false or `steps` tokens
// were produced. `tokens` is the prompt; emitted tokens are appended to it.
using NextToken = std::function<bool(int64_t step, const Tensor& logits)>;

// Decoding with a KV cache: the prompt once, then one position per token (docs/interop.md).
void generate_cached(const LoadedModel& loaded, std::vector<int32_t>& tokens, int64_t steps,
                     const NextToken& next_token) {
  const int64_t capacity = int64_t(tokens.size()) + steps;
  if (capacity > loaded.recipe.data.seq_len)
    std::fprintf(stderr,
                 "generate: the prompt (%zu tokens) and %lld new tokens need %lld positions, more "
                 "than the training context (data.seq_len=%lld): positions past it extrapolate "
                 "RoPE (--no-cache instead keeps the last %lld tokens)\n",
                 tokens.size(), (long long)steps, (long long)capacity,
                 (long long)loaded.recipe.data.seq_len, (long long)loaded.recipe.data.seq_len);
  KvCache cache = loaded.model->make_cache(capacity);
  Tensor prompt = Tensor::from_vector(tokens, {1, int64_t(tokens.size())}, loaded.device);
  Tensor logits = loaded.model->prefill(prompt, cache);
  for (int64_t i = 0; i < steps && next_token(i, logits); ++i) {
    if (i + 1 < steps) logits = loaded.model->decode_step(tokens.back(), cache);
  }
}

// Without a cache: the whole context (at most its last seq_len tokens) for every token.
void generate_recomputed(const LoadedModel& loaded, std::vector<int32_t>& tokens, int64_t steps,
                         const NextToken& next_token) {
  const int64_t window = loaded.recipe.data.seq_len;
  for (int64_t i = 0; i < steps; ++i) {
    // The model sees at most its training context: the last seq_len tokens.
    size_t begin = tokens.size() > size_t(window) ? tokens.size() - size_t(window) : 0;
    std::vector<int32_t> context(tokens.begin() + begin, tokens.end());
    Tensor input = Tensor::from_vector(context, {1, int64_t(context.size())}, loaded.device);
    if (!next_token(i, loaded.model->last_logits(input))) return;
  }
}

}  // namespace

int generate_command(int argc, char** argv) {
  CliArgs args = parse_cli("generate", argc, argv,
                           {"--prompt", "--prompt-ids", "--tokens", "--temperature", "--seed",
                            "--device", "--tokenizer"},
                           {"--no-cache"});
  if (args.has("--help") || args.positionals.size() != 1) {
    std::fputs(kHelp, args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  // Every number is checked before the checkpoint is read: a typo costs no load time.
  const int64_t steps = args.get_int("--tokens", 200, {1});
  const double temperature = args.get_real("--temperature", 0.8, {0});
  const uint64_t seed = uint64_t(args.get_int("--seed", 0, {0}));
  LoadedModel loaded = load_model(args.positionals[0], args.get("--device", "auto"));
  const TextTokenizer tokenizer(loaded, args.get("--tokenizer", ""));
  std::vector<int32_t> tokens =
      tokenizer.prompt(args.get("--prompt", ""), args.get("--prompt-ids", ""));
  std::fputs(tokenizer.decode(tokens).c_str(), stdout);
  autograd::NoGradGuard no_grad;
  auto next_token = [&](int64_t i, const Tensor& logits_tensor) {
    std::vector<float> logits = ops::cast(logits_tensor, DType::f32).to_vector<float>();
    int32_t next = pick_token(logits, temperature, seed, uint64_t(i));
    if (tokenizer.stops(next)) return false;
    tokens.push_back(next);
    const std::string text = tokenizer.token_bytes(next);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return true;
  };
  bool cached = !args.has("--no-cache");
  if (cached && loaded.model->config().attention.variant == attention::AttentionVariant::nsa) {
    std::fputs(
        "generate: the NSA variant has no KV-cache decode; recomputing the context for "
        "each token\n",
        stderr);
    cached = false;
  }
  if (cached)
    generate_cached(loaded, tokens, steps, next_token);
  else
    generate_recomputed(loaded, tokens, steps, next_token);
  std::fputc('\n', stdout);
  return 0;
}

}  // namespace infllm::train
