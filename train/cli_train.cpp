// infllm train RECIPE [key.sub=value ...] [--resume | --resume-last-good | --overwrite] [--nproc N]
#include <cstdio>
#include <string>
#include <vector>

#include "train/cli_args.h"
#include "train/commands.h"
#include "train/trainer.h"

namespace infllm::train {
namespace {

constexpr const char* kHelp =
    R"(usage: infllm train RECIPE [section.key=value ...] [--resume | --resume-last-good |
                                                   --overwrite] [--nproc N]

Trains the model a YAML recipe describes; the run folder is train.out_dir.
  section.key=value  override a recipe value, e.g. train.steps=100 train.out_dir=runs/q
  --resume           continue from the newest checkpoint in <out_dir>/checkpoints; a
                     damaged one (checksum mismatch, truncated) is an error naming it
  --resume-last-good --resume, from the newest checkpoint that verifies when the newest is
                     damaged (damaged files are kept, renamed to *.damaged)
  --overwrite        start over in a folder that holds an earlier run: its checkpoints,
                     metrics, recipe.yaml and event files are moved (not deleted) into
                     <out_dir>/previous-<date>-<time>/ once the new run is accepted
  --nproc N          start N processes on this node, one per GPU (data parallel)
A folder has one writer: a second run into it fails at once, naming the first one's pid.
A fresh run into a folder that holds checkpoints or metrics is refused without --resume or
--overwrite. Recipe, data files and a memory estimate are checked before anything is
written; a run that fails those checks leaves the folder as it was.
Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and stops; a second one stops at once.
)";

}  // namespace

int train_command(int argc, char** argv) {
  CliArgs args = parse_cli("train", argc, argv, {"--nproc"},
                           {"--resume", "--resume-last-good", "--overwrite"});
  if (args.has("--help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positionals.empty()) {
    std::fputs(kHelp, stderr);
    return 2;
  }
  int64_t nproc = args.get_int("--nproc", 0, {1, kMaxLocalRanks});
  if (nproc > 0) return launch_local_ranks("train", argc, argv, int(nproc));
  std::vector<std::string> overrides(args.positionals.begin() + 1, args.positionals.end());
  Recipe recipe = load_recipe(args.positionals[0], overrides);
  TrainOptions options;
  options.resume_last_good = args.has("--resume-last-good");
  options.resume = args.has("--resume") || options.resume_last_good;
  options.overwrite = args.has("--overwrite");
  return train(recipe, options);
}

}  // namespace infllm::train
