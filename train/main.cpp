// infllm: train, evaluate and sample long-context language models with InfLLM-V2
// dense-sparse switchable attention.
#include <cstdio>
#include <cstring>
#include <string>

#include "core/error.h"
#include "train/commands.h"

namespace {

constexpr const char* kUsage = R"(usage: infllm <command> [options]

commands:
  train RECIPE [key.sub=value ...] [--resume] [--nproc N]
                         train from a YAML recipe (recipes/quickstart.yaml, ...)
  eval CHECKPOINT        validation loss / perplexity of a checkpoint (--attention dense|sparse)
  generate CHECKPOINT    sample text from a checkpoint
  prepare -o OUT INPUT.. turn text files or folders into an HDF5 token file
  bench RECIPE           time training steps (tokens/s, MFU, peak memory) as JSON
  export CKPT -o DIR     write a checkpoint as a Hugging Face Llama folder (safetensors)
  import DIR -o CKPT     read a Hugging Face Llama folder into a checkpoint
  logits MODEL --tokens  next-token logits of a checkpoint or hf:DIR, as JSON

`infllm <command> --help` lists each command's options.
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string command = argv[1];
  try {
    if (command == "train") return infllm::train::train_command(argc - 1, argv + 1);
    if (command == "eval") return infllm::train::eval_command(argc - 1, argv + 1);
    if (command == "generate") return infllm::train::generate_command(argc - 1, argv + 1);
    if (command == "bench") return infllm::train::bench_command(argc - 1, argv + 1);
    if (command == "prepare") return infllm::train::prepare_command(argc - 1, argv + 1);
    if (command == "export") return infllm::train::export_command(argc - 1, argv + 1);
    if (command == "import") return infllm::train::import_command(argc - 1, argv + 1);
    if (command == "logits") return infllm::train::logits_command(argc - 1, argv + 1);
  } catch (const infllm::Error& e) {
    std::fprintf(stderr, "\ninfllm %s: error: %s\n", command.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\ninfllm %s: unexpected error: %s\n", command.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "infllm: unknown command \"%s\"\n\n%s", command.c_str(), kUsage);
  return 2;
}
