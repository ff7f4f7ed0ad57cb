#include "data/prepare.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <optional>

#include "core/error.h"
#include "data/byte_tokenizer.h"
#include "data/progress.h"
#include "data/token_file.h"

namespace infllm::data {

namespace fs = std::filesystem;

std::string validation_path(const std::string& output) {
  const fs::path path(output);
  return (path.parent_path() / (path.stem().string() + ".val" + path.extension().string()))
      .string();
}

std::vector<fs::path> list_documents(const std::vector<std::string>& inputs) {
  INFLLM_CHECK(!inputs.empty(), "prepare: no inputs; name the text files or folders to tokenize");
  std::vector<fs::path> documents;
  for (const std::string& input : inputs) {
    std::error_code error;
    const fs::file_status status = fs::status(input, error);
    INFLLM_CHECK(fs::exists(status), "prepare: input '", input, "' does not exist; check the path");
    if (fs::is_regular_file(status)) {
      documents.emplace_back(input);
      continue;
    }
    INFLLM_CHECK(fs::is_directory(status), "prepare: input '", input,
                 "' is neither a regular file nor a folder");
    std::vector<fs::path> found;
    for (auto it = fs::recursive_directory_iterator(input, error);
         !error && it != fs::recursive_directory_iterator(); it.increment(error)) {
      if (it->is_regular_file()) found.push_back(it->path());
    }
    INFLLM_CHECK(!error, "prepare: cannot list folder '", input, "': ", error.message());
    std::sort(found.begin(), found.end());
    documents.insert(documents.end(), found.begin(), found.end());
  }
  return documents;
}

namespace {

int64_t file_bytes(const fs::path& path) {
  std::error_code error;
  const auto bytes = fs::file_size(path, error);
  INFLLM_CHECK(!error, "prepare: cannot read the size of '", path.string(), "': ", error.message());
  return static_cast<int64_t>(bytes);
}

// How many documents of `count` go to validation.
int64_t validation_count(int64_t count, const PrepareOptions& options) {
  int64_t val = options.val_docs;
  if (val < 0) {
    INFLLM_CHECK(options.val_fraction >= 0 && options.val_fraction < 1, "prepare: --val-fraction ",
                 options.val_fraction, " must be in [0, 1)");
    val = std::llround(count * options.val_fraction);
    if (val == 0 && options.val_fraction > 0 && count >= 2) val = 1;
  }
  INFLLM_CHECK(val < count, "prepare: ", val, " validation documents of ", count,
               " leave none for training; lower --val-fraction/--val-docs or add documents");
  return val;
}

// Spreads `val` of `count` documents evenly: document i is held out when the running quota
// round(i * val / count) steps up. Exactly `val` documents are chosen, none at the ends.
bool is_validation_document(int64_t i, int64_t val, int64_t count) {
  return ((i + 1) * val + count / 2) / count > (i * val + count / 2) / count;
}

// Streams one file into the writer as one document.
void tokenize_document(const fs::path& path, const PrepareOptions& options, TokenFileWriter& writer,
                       ByteProgress* progress, int64_t& bytes_done) {
  static constexpr size_t kBlock = 1 << 20;
  std::ifstream in(path, std::ios::binary);
  INFLLM_CHECK(in.is_open(), "prepare: cannot open '", path.string(),
               "' for reading (permissions?)");
  const ByteTokenizer tokenizer;
  std::string block(kBlock, '\0');
  std::vector<uint32_t> tokens;
  tokens.reserve(kBlock + 1);
  if (options.bos) tokens.push_back(ByteTokenizer::kBos);
  while (in) {
    in.read(block.data(), block.size());
    const std::streamsize got = in.gcount();
    INFLLM_CHECK(!in.bad(), "prepare: reading '", path.string(), "' failed (I/O error)");
    tokenizer.encode_append(std::string_view(block.data(), got), tokens);
    writer.append_tokens(tokens);
    tokens.clear();
    bytes_done += got;
    if (progress) progress->update(bytes_done);
  }
  if (options.eos) tokens.push_back(ByteTokenizer::kEos);
  writer.append_tokens(tokens);
  writer.end_document();
}

}  // namespace

PrepareSummary prepare_corpus(const std::vector<std::string>& inputs, const std::string& output,
                              const PrepareOptions& options) {
  const std::vector<fs::path> listed = list_documents(inputs);
  // A rerun whose output lies inside an input folder must not eat its previous output.
  const fs::path own_outputs[] = {fs::weakly_canonical(output),
                                  fs::weakly_canonical(validation_path(output))};
  PrepareSummary summary;
  std::vector<fs::path> documents;
  for (const fs::path& path : listed) {
    if (std::ranges::find(own_outputs, fs::weakly_canonical(path)) != std::end(own_outputs)) {
      continue;
    }
    const int64_t bytes = file_bytes(path);
    if (bytes < std::max<int64_t>(options.min_doc_bytes, 1)) {
      ++summary.skipped_documents;
      continue;
    }
    documents.push_back(path);
    summary.input_bytes += bytes;
  }
  INFLLM_CHECK(!documents.empty(), "prepare: empty corpus: the inputs hold ", listed.size(),
               " files and none has at least ", std::max<int64_t>(options.min_doc_bytes, 1),
               " bytes");
  const int64_t count = static_cast<int64_t>(documents.size());
  const int64_t val_count = validation_count(count, options);

  std::string source = options.source;
  if (source.empty()) {
    for (const std::string& input : inputs) source += (source.empty() ? "" : " ") + input;
  }
  const TokenFileAttributes attributes{ByteTokenizer::kVocabSize, std::string(ByteTokenizer::kName),
                                       source};
  TokenFileWriter train(output, attributes);
  std::optional<TokenFileWriter> val;
  if (val_count > 0) val.emplace(validation_path(output), attributes);

  std::unique_ptr<ByteProgress> progress;
  if (options.progress) progress = std::make_unique<ByteProgress>("prepare", summary.input_bytes);
  int64_t bytes_done = 0;
  for (int64_t i = 0; i < count; ++i) {
    TokenFileWriter& writer = is_validation_document(i, val_count, count) ? *val : train;
    tokenize_document(documents[i], options, writer, progress.get(), bytes_done);
  }
  // Both splits are complete on disk before either is published: a failure (a full disk)
  // leaves neither, and no temporary file (the writers delete theirs).
  train.finish();
  if (val) val->finish();
  train.publish();
  summary.train = {train.path(), train.num_documents(), train.num_tokens()};
  if (val) {
    val->publish();
    summary.val = {val->path(), val->num_documents(), val->num_tokens()};
  }
  if (progress) progress->finish();
  return summary;
}

}  // namespace infllm::data
