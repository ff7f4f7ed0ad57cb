// infllm eval CHECKPOINT [--data FILE] [--attention dense|sparse|auto] [--seq-len T] ...
#include <cstdio>
#include <limits>
#include <memory>
#include <string>

#include "train/cli_args.h"
#include "train/commands.h"
#include "train/evaluate.h"
#include "train/load_model.h"
#include "train/long_eval.h"
#include "train/run_setup.h"

namespace infllm::train {
namespace {

constexpr const char* kHelp = R"(usage: infllm eval CHECKPOINT [options]

Validation loss and perplexity of a checkpoint (a file, or RUN/checkpoints/latest).
  --data FILE          token file to score (default: the recipe's data.val)
  --attention MODE     dense | sparse | auto (default: the recipe's attention.mode), so the
                       same weights can be compared through both paths
  --lse-stride N       attention.lse_stride for the block selection (1 = exact normalizer)
  --selection-agreement
                       also report how often the sparse path's block choices equal the exact
                       f64 reference's on these activations (slow: copies q, k to the host)
  --seq-len T          tokens per window (default: the recipe's data.seq_len)
  --batch B            windows per forward pass (default: the recipe's data.batch_size)
  --windows K          windows scored (default 64)
  --device D           auto | cpu | cuda | cuda:N (default auto)
Long-context evaluation (docs/experiments.md) instead of the plain loss:
  --long               loss by position, passkey/needle accuracy over lengths x depths, and
                       attention recall by layer, as one JSON object
  --lengths L1,L2,..   sequence lengths (default 4096,8192,16384,32768)
  --bucket N           positions per loss bucket (default 1024)
  --loss-windows K     validation windows per length (default 4)
  --depths D1,D2,..    needle depths in [0, 1] (default 0,0.25,0.5,0.75,1)
  --task-samples N     sequences per (task, length, depth) (default 4; 0: no tasks)
  --recall-rows N      query rows sampled per layer for recall (default 256; 0: no recall)
  --recall-len T       sequence length of the recall pass (default: the longest length)
  --json FILE          also write the JSON object to FILE
)";

}  // namespace

int eval_command(int argc, char** argv) {
  CliArgs args =
      parse_cli("eval", argc, argv,
                {"--data", "--attention", "--lse-stride", "--seq-len", "--batch", "--windows",
                 "--device", "--lengths", "--bucket", "--loss-windows", "--depths",
                 "--task-samples", "--recall-rows", "--recall-len", "--json"},
                {"--selection-agreement", "--long"});
  if (args.has("--help") || args.positionals.size() != 1) {
    std::fputs(kHelp, args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  // Every number is checked before the checkpoint is read: a typo costs no load time.
  const int64_t lse_stride = args.get_int("--lse-stride", 0, {1, std::numeric_limits<int>::max()});
  const int64_t seq_len = args.get_int("--seq-len", 0, {2, std::numeric_limits<int>::max()});
  const int64_t batch = args.get_int("--batch", 0, {1, std::numeric_limits<int>::max()});
  const int64_t windows = args.get_int("--windows", 64, {1});
  const LongEvalOptions long_options = long_eval_options(args.options);
  LoadedModel loaded = load_model(args.positionals[0], args.get("--device", "auto"));
  const Recipe& recipe = loaded.recipe;
  AttentionOptions options = loaded.model->config().attention;
  if (args.has("--attention"))
    options.mode =
        from_string<attention::AttentionMode>(args.get("--attention", ""), "--attention");
  if (args.has("--lse-stride")) options.sparse.lse_stride = int(lse_stride);
  attention::check_sparse_config("infllm eval --lse-stride", options.sparse);
  if (args.has("--selection-agreement"))
    options.selection_agreement = std::make_shared<SelectionAgreement>();
  loaded.model->set_attention(options);
  std::string data = args.get("--data", recipe.data.val);
  INFLLM_CHECK(!data.empty(), "infllm eval: the recipe has no data.val; pass --data FILE");
  if (args.has("--long"))
    return long_eval_main(loaded, data, long_options, args.get("--json", ""), args.positionals[0]);
  const int64_t T = args.has("--seq-len") ? seq_len : recipe.data.seq_len;
  const int64_t B = args.has("--batch") ? batch : recipe.data.batch_size;
  EvalResult r = evaluate(*loaded.model, data, T, B, windows, loaded.device);
  const std::string mode(attention::to_string(options.mode));
  std::string agreement;  // only when measured: sparse calls chose blocks
  if (options.selection_agreement && options.selection_agreement->chosen > 0)
    agreement =
        ", \"lse_stride\": " + std::to_string(options.sparse.lse_stride) +
        ", \"selection_agreement\": " + std::to_string(options.selection_agreement->fraction());
  std::printf(
      "{\"checkpoint\": \"%s\", \"step\": %lld, \"data\": \"%s\", \"seq_len\": %lld, "
      "\"attention\": \"%s\", \"tokens\": %lld, \"loss\": %.6f, \"perplexity\": %.4f%s}\n",
      args.positionals[0].c_str(), (long long)loaded.step, data.c_str(), (long long)T, mode.c_str(),
      (long long)r.tokens, r.loss, r.perplexity, agreement.c_str());
  return 0;
}

}  // namespace infllm::train
