// Text files -> token files: the `infllm prepare` step.
//
// Every regular file is one document (folders are walked recursively, their files sorted by
// path so that the result does not depend on the file system's order). Documents are encoded
// with the byte tokenizer, wrapped in BOS/EOS, and streamed into two token files:
//   OUTPUT                      the training split, e.g. corpus.h5
//   validation_path(OUTPUT)     the held-out split, e.g. corpus.val.h5
// The validation documents are spread evenly over the sorted document list.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace infllm::data {

struct PrepareOptions {
  double val_fraction = 0.02;  // share of the documents held out for validation
  int64_t val_docs = -1;       // exact number of validation documents; >= 0 overrides the fraction
  bool bos = true;             // BOS before each document
  bool eos = true;             // EOS after each document
  int64_t min_doc_bytes = 1;   // smaller files are skipped (empty files always are)
  std::string source;          // the `source` attribute; empty: the input paths
  bool progress = true;        // report progress on stderr
};

struct SplitSummary {
  std::string path;  // empty when the split has no documents and no file was written
  int64_t documents = 0;
  int64_t tokens = 0;
};

struct PrepareSummary {
  SplitSummary train;
  SplitSummary val;
  int64_t input_bytes = 0;        // bytes of the documents kept
  int64_t skipped_documents = 0;  // files shorter than min_doc_bytes
};

// "dir/corpus.h5" -> "dir/corpus.val.h5"; "dir/corpus" -> "dir/corpus.val".
std::string validation_path(const std::string& output);

// The document files named by `inputs` (files, or folders walked recursively), in order:
// inputs as given, each folder's files sorted by path. A missing input is an error.
std::vector<std::filesystem::path> list_documents(const std::vector<std::string>& inputs);

// Writes the two splits; without validation documents (val_fraction 0) only OUTPUT is written.
// An empty corpus, an unreadable file, or a split that leaves no training document is an error.
PrepareSummary prepare_corpus(const std::vector<std::string>& inputs, const std::string& output,
                              const PrepareOptions& options);

}  // namespace infllm::data
