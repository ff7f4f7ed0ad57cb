// infllm generate CHECKPOINT [--prompt TEXT] [--tokens N] [--temperature X] [--seed S]
#include <cmath>
#include <cstdio>
#include <vector>

#include "autograd/node.h"
#include "core/ops.h"
#include "core/rng.h"
#include "data/byte_tokenizer.h"
#include "train/cli_args.h"
#include "train/commands.h"
#include "train/load_model.h"

namespace infllm::train {
namespace {

constexpr const char* kHelp = R"(usage: infllm generate CHECKPOINT [options]

Samples text from a checkpoint (a file, or RUN/checkpoints/latest) with the byte tokenizer.
  --prompt TEXT        text to continue (default: empty, the model starts a document)
  --tokens N           tokens to generate (default 200)
  --temperature X      0 = greedy; otherwise sample from softmax(logits / X) (default 0.8)
  --seed S             sampling seed (default 0)
  --device D           auto | cpu | cuda | cuda:N (default auto)
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

}  // namespace

int generate_command(int argc, char** argv) {
  CliArgs args = parse_cli("generate", argc, argv,
                           {"--prompt", "--tokens", "--temperature", "--seed", "--device"}, {});
  if (args.has("--help") || args.positionals.size() != 1) {
    std::fputs(kHelp, args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  // Every number is checked before the checkpoint is read: a typo costs no load time.
  const int64_t steps = args.get_int("--tokens", 200, {1});
  const double temperature = args.get_real("--temperature", 0.8, {0});
  const uint64_t seed = uint64_t(args.get_int("--seed", 0, {0}));
  LoadedModel loaded = load_model(args.positionals[0], args.get("--device", "auto"));
  data::ByteTokenizer tokenizer;
  std::vector<uint32_t> encoded = tokenizer.encode(args.get("--prompt", ""));
  std::vector<int32_t> tokens = {int32_t(data::ByteTokenizer::kBos)};
  tokens.insert(tokens.end(), encoded.begin(), encoded.end());
  int64_t window = loaded.recipe.data.seq_len;
  std::fputs(args.get("--prompt", "").c_str(), stdout);
  autograd::NoGradGuard no_grad;
  for (int64_t i = 0; i < steps; ++i) {
    // The model sees at most its training context: the last seq_len tokens.
    size_t begin = tokens.size() > size_t(window) ? tokens.size() - size_t(window) : 0;
    std::vector<int32_t> context(tokens.begin() + begin, tokens.end());
    Tensor input = Tensor::from_vector(context, {1, int64_t(context.size())}, loaded.device);
    std::vector<float> logits =
        ops::cast(loaded.model->last_logits(input), DType::f32).to_vector<float>();
    int32_t next = pick_token(logits, temperature, seed, uint64_t(i));
    if (next == int32_t(data::ByteTokenizer::kEos)) break;
    tokens.push_back(next);
    if (next < 256) {
      std::fputc(next, stdout);
      std::fflush(stdout);
    }
  }
  std::fputc('\n', stdout);
  return 0;
}

}  // namespace infllm::train
