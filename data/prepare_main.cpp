#include "data/prepare_main.h"

#include <charconv>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "data/prepare.h"

namespace infllm::data {

namespace {

constexpr const char* kUsage =
    "usage: infllm prepare [options] -o OUT INPUT...\n"
    "\n"
    "Tokenizes text with the byte tokenizer into HDF5 token files for training.\n"
    "Each INPUT is a text file or a folder (read recursively, files sorted by path); every\n"
    "file is one document, written as BOS bytes... EOS. Writes the training split to OUT and\n"
    "the validation split beside it (OUT=corpus.h5 -> corpus.val.h5).\n"
    "\n"
    "options:\n"
    "  -o, --output OUT       training token file to write (required)\n"
    "  --val-fraction F       share of documents held out for validation, in [0, 1)\n"
    "                         (default 0.02; 0 writes no validation file)\n"
    "  --val-docs N           hold out exactly N documents (overrides --val-fraction)\n"
    "  --min-doc-bytes N      skip files smaller than N bytes (default 1)\n"
    "  --source S             the file's `source` attribute: where the text came from\n"
    "                         (default: the INPUT paths)\n"
    "  --no-bos               do not put BOS before each document\n"
    "  --no-eos               do not put EOS after each document\n"
    "  --quiet                no progress report on stderr\n"
    "  -h, --help             show this help\n";

struct UsageError {
  std::string message;
};

template <class Number>
Number parse_number(std::string_view option, std::string_view text) {
  Number value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) {
    throw UsageError{std::string(option) + " expects a number, got '" + std::string(text) + "'"};
  }
  return value;
}

struct Arguments {
  std::string output;
  std::vector<std::string> inputs;
  PrepareOptions options;
  bool help = false;
};

Arguments parse_arguments(int argc, char** argv) {
  Arguments args;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view inline_value;
    bool has_inline_value = false;
    if (arg.starts_with("--") && arg.find('=') != std::string_view::npos) {
      inline_value = arg.substr(arg.find('=') + 1);
      arg = arg.substr(0, arg.find('='));
      has_inline_value = true;
    }
    // The option's value: after '=' or the next argument.
    auto value = [&]() -> std::string_view {
      if (has_inline_value) return inline_value;
      if (i + 1 >= argc) throw UsageError{std::string(arg) + " needs a value"};
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      args.help = true;
    } else if (arg == "-o" || arg == "--output") {
      args.output = value();
    } else if (arg == "--val-fraction") {
      args.options.val_fraction = parse_number<double>(arg, value());
    } else if (arg == "--val-docs") {
      args.options.val_docs = parse_number<int64_t>(arg, value());
    } else if (arg == "--min-doc-bytes") {
      args.options.min_doc_bytes = parse_number<int64_t>(arg, value());
    } else if (arg == "--source") {
      args.options.source = value();
    } else if (arg == "--no-bos") {
      args.options.bos = false;
    } else if (arg == "--no-eos") {
      args.options.eos = false;
    } else if (arg == "--quiet") {
      args.options.progress = false;
    } else if (arg.starts_with("-") && arg.size() > 1) {
      throw UsageError{"unknown option " + std::string(arg)};
    } else {
      args.inputs.emplace_back(arg);
    }
  }
  if (args.help) return args;
  if (args.output.empty()) throw UsageError{"no output file; give it with -o OUT"};
  if (args.inputs.empty()) throw UsageError{"no inputs; name the text files or folders"};
  return args;
}

void print_split(const char* name, const SplitSummary& split) {
  std::printf("%-5s %-40s %10lld documents %14lld tokens\n", name, split.path.c_str(),
              static_cast<long long>(split.documents), static_cast<long long>(split.tokens));
}

}  // namespace

int prepare_main(int argc, char** argv) {
  Arguments args;
  try {
    args = parse_arguments(argc, argv);
  } catch (const UsageError& error) {
    std::fprintf(stderr, "infllm prepare: %s\n\n%s", error.message.c_str(), kUsage);
    return 2;
  }
  if (args.help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  try {
    const PrepareSummary summary = prepare_corpus(args.inputs, args.output, args.options);
    print_split("train", summary.train);
    if (!summary.val.path.empty()) print_split("val", summary.val);
    if (summary.skipped_documents > 0) {
      std::printf("skipped %lld files shorter than %lld bytes\n",
                  static_cast<long long>(summary.skipped_documents),
                  static_cast<long long>(args.options.min_doc_bytes));
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
  return 0;
}

}  // namespace infllm::data
