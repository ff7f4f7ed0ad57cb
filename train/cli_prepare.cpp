// infllm prepare [options] -o OUT INPUT...: text files and folders -> HDF5 token files.
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/prepare.h"
#include "train/cli_args.h"
#include "train/commands.h"

namespace infllm::train {
namespace {

constexpr const char* kHelp = R"(usage: infllm prepare [options] -o OUT INPUT...

Tokenizes text with the byte tokenizer into HDF5 token files for training.
Each INPUT is a text file or a folder (read recursively, files sorted by path); every
file is one document, written as BOS bytes... EOS. Writes the training split to OUT and
the validation split beside it (OUT=corpus.h5 -> corpus.val.h5).

options:
  -o, --output OUT       training token file to write (required)
  --val-fraction F       share of documents held out for validation, in [0, 1)
                         (default 0.02; 0 writes no validation file)
  --val-docs N           hold out exactly N >= 0 documents (overrides --val-fraction)
  --min-doc-bytes N      skip files smaller than N >= 1 bytes (default 1)
  --source S             the file's `source` attribute: where the text came from
                         (default: the INPUT paths)
  --no-bos               do not put BOS before each document
  --no-eos               do not put EOS after each document
  --quiet                no progress report on stderr
  -h, --help             show this help

A failure (unreadable input, full disk, read-only folder) is one message and exit code 1;
files are written under a temporary name and renamed only when complete, so OUT is either
the old file, the new one, or absent - never half written.
)";

void print_split(const char* name, const data::SplitSummary& split) {
  std::printf("%-5s %-40s %10lld documents %14lld tokens\n", name, split.path.c_str(),
              static_cast<long long>(split.documents), static_cast<long long>(split.tokens));
}

}  // namespace

int prepare_command(int argc, char** argv) {
  // "-o OUT" is the one short option: spelled out, parse_cli takes it like the others.
  std::vector<std::string> spelled(argv, argv + argc);
  for (std::string& arg : spelled) arg = arg == "-o" ? "--output" : arg;
  std::vector<char*> spelled_argv;
  for (std::string& arg : spelled) spelled_argv.push_back(arg.data());
  CliArgs args =
      parse_cli("prepare", argc, spelled_argv.data(),
                {"--output", "--val-fraction", "--val-docs", "--min-doc-bytes", "--source"},
                {"--no-bos", "--no-eos", "--quiet"});
  if (args.has("--help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (!args.has("--output") || args.positionals.empty()) {
    std::fprintf(stderr, "infllm prepare: %s\n\n%s",
                 args.has("--output") ? "no inputs; name the text files or folders"
                                      : "no output file; give it with -o OUT",
                 kHelp);
    return 2;
  }
  data::PrepareOptions options;
  options.val_fraction =
      args.get_real("--val-fraction", options.val_fraction, {0, 1, false, /*max_open=*/true});
  options.val_docs = args.get_int("--val-docs", options.val_docs, {0});
  options.min_doc_bytes = args.get_int("--min-doc-bytes", options.min_doc_bytes, {1});
  options.source = args.get("--source", "");
  options.bos = !args.has("--no-bos");
  options.eos = !args.has("--no-eos");
  options.progress = !args.has("--quiet");
  const data::PrepareSummary summary =
      data::prepare_corpus(args.positionals, args.get("--output", ""), options);
  print_split("train", summary.train);
  if (!summary.val.path.empty()) print_split("val", summary.val);
  if (summary.skipped_documents > 0) {
    std::printf("skipped %lld files shorter than %lld bytes\n",
                static_cast<long long>(summary.skipped_documents),
                static_cast<long long>(options.min_doc_bytes));
  }
  return 0;
}

}  // namespace infllm::train
