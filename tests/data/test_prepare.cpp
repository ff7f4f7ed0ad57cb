#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "data/byte_tokenizer.h"
#include "data/prepare.h"
#include "data/token_file.h"
#include "test_util.h"

namespace infllm::data {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;
using testing::TempDir;

// Random printable English-like text with newlines and some multi-byte characters.
std::string random_text(std::mt19937_64& rng, size_t bytes) {
  static const std::vector<std::string> words = {"the", "loader", "reads",       "windows",
                                                 "of",  "tokens", "caf\xC3\xA9", "\xE2\x80\x94",
                                                 "and", "\n\n",   "sparse",      "attention."};
  std::uniform_int_distribution<size_t> pick(0, words.size() - 1);
  std::string text;
  while (text.size() < bytes) text += words[pick(rng)] + " ";
  return text;
}

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Document d of a token file, decoded back to text.
std::vector<std::string> decode_documents(const TokenFile& file, bool specials) {
  const std::vector<int64_t> offsets = file.doc_offsets();
  std::vector<std::string> docs;
  for (size_t d = 0; d < offsets.size(); ++d) {
    const int64_t end = d + 1 < offsets.size() ? offsets[d + 1] : file.num_tokens();
    std::vector<uint32_t> tokens = file.read(offsets[d], end);
    if (specials) {
      EXPECT_EQ(tokens.front(), ByteTokenizer::kBos);
      EXPECT_EQ(tokens.back(), ByteTokenizer::kEos);
    }
    std::string bytes;
    for (uint32_t t : tokens) {
      if (t < 256) bytes += static_cast<char>(t);
    }
    docs.push_back(bytes);
  }
  return docs;
}

class Prepare : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(41);
    std::uniform_int_distribution<size_t> size(1, 40000);
    // A nested corpus; the sorted file order is the document order.
    for (int i = 0; i < 24; ++i) {
      const std::string name = (i % 3 == 0   ? "b/deep/"
                                : i % 3 == 1 ? "a/"
                                             : "") +
                               std::string("doc") + (i < 10 ? "0" : "") + std::to_string(i) +
                               ".txt";
      const fs::path path = dir_.path() / "corpus" / name;
      write_file(path, random_text(rng, size(rng)));
      expected_.push_back(path);
    }
    write_file(dir_.path() / "corpus" / "a" / "empty.txt", "");
    std::sort(expected_.begin(), expected_.end());
  }

  TempDir dir_;
  std::vector<fs::path> expected_;
};

TEST_F(Prepare, ListsFilesRecursivelyInSortedOrder) {
  std::vector<fs::path> listed = list_documents({(dir_.path() / "corpus").string()});
  std::erase(listed, dir_.path() / "corpus" / "a" / "empty.txt");
  EXPECT_EQ(listed, expected_);
}

TEST_F(Prepare, SplitsAndRoundTripsEveryDocument) {
  PrepareOptions options;
  options.val_fraction = 0.1;
  options.source = "unit test corpus";
  options.progress = false;
  const std::string out = dir_.file("out.h5");
  const PrepareSummary summary = prepare_corpus({(dir_.path() / "corpus").string()}, out, options);
  EXPECT_EQ(summary.skipped_documents, 1);  // the empty file
  EXPECT_EQ(summary.train.path, out);
  EXPECT_EQ(summary.val.path, dir_.file("out.val.h5"));
  EXPECT_EQ(summary.val.documents, 2);  // round(24 * 0.1)
  EXPECT_EQ(summary.train.documents, 22);

  const TokenFile train(out);
  const TokenFile val(summary.val.path);
  EXPECT_EQ(train.attributes().tokenizer, "byte");
  EXPECT_EQ(train.attributes().source, "unit test corpus");
  EXPECT_EQ(train.vocab_size(), 258);
  EXPECT_EQ(train.num_tokens(), summary.train.tokens);
  EXPECT_EQ(val.num_tokens(), summary.val.tokens);
  const std::vector<std::string> train_docs = decode_documents(train, true);
  const std::vector<std::string> val_docs = decode_documents(val, true);

  // Both splits in order interleave back to the sorted file list; validation documents are
  // spread out (not the first or last ones).
  size_t t = 0, v = 0;
  int64_t total_bytes = 0;
  std::vector<size_t> val_positions;
  for (size_t i = 0; i < expected_.size(); ++i) {
    const std::string text = read_file(expected_[i]);
    total_bytes += text.size();
    if (v < val_docs.size() && val_docs[v] == text) {
      val_positions.push_back(i);
      ++v;
    } else {
      ASSERT_LT(t, train_docs.size());
      EXPECT_EQ(train_docs[t++], text) << expected_[i];
    }
  }
  EXPECT_EQ(t, train_docs.size());
  EXPECT_EQ(v, val_docs.size());
  EXPECT_EQ(summary.input_bytes, total_bytes);
  EXPECT_EQ(summary.train.tokens + summary.val.tokens, total_bytes + 2 * 24);
  ASSERT_EQ(val_positions.size(), 2u);
  EXPECT_GT(val_positions[0], 0u);
  EXPECT_LT(val_positions[1], expected_.size() - 1);
}

TEST_F(Prepare, OutputInsideTheInputFolderIsNotADocument) {
  PrepareOptions options;
  options.val_docs = 1;
  options.progress = false;
  const std::string corpus = (dir_.path() / "corpus").string();
  const std::string out = (dir_.path() / "corpus" / "out.h5").string();
  const PrepareSummary first = prepare_corpus({corpus}, out, options);
  const PrepareSummary second = prepare_corpus({corpus}, out, options);
  EXPECT_EQ(second.train.documents, first.train.documents);
  EXPECT_EQ(second.train.tokens, first.train.tokens);
  EXPECT_EQ(second.val.tokens, first.val.tokens);
}

TEST_F(Prepare, IsDeterministic) {
  PrepareOptions options;
  options.val_docs = 3;
  options.progress = false;
  const std::string corpus = (dir_.path() / "corpus").string();
  const PrepareSummary a = prepare_corpus({corpus}, dir_.file("a.h5"), options);
  const PrepareSummary b = prepare_corpus({corpus}, dir_.file("b.h5"), options);
  EXPECT_EQ(a.val.documents, 3);
  const TokenFile fa(dir_.file("a.h5")), fb(dir_.file("b.h5"));
  EXPECT_EQ(fa.read(0, fa.num_tokens()), fb.read(0, fb.num_tokens()));
  EXPECT_EQ(fa.doc_offsets(), fb.doc_offsets());
}

TEST_F(Prepare, WithoutSpecialsOrValidation) {
  PrepareOptions options;
  options.val_fraction = 0;
  options.bos = false;
  options.eos = false;
  options.min_doc_bytes = 20000;
  options.progress = false;
  const std::string file = expected_[3].string();
  const PrepareSummary summary =
      prepare_corpus({(dir_.path() / "corpus").string(), file}, dir_.file("plain.h5"), options);
  EXPECT_TRUE(summary.val.path.empty());
  EXPECT_FALSE(fs::exists(dir_.file("plain.val.h5")));
  int64_t kept = 0, bytes = 0;
  for (const fs::path& path : expected_) {
    if (fs::file_size(path) >= 20000) {
      ++kept;
      bytes += fs::file_size(path);
    }
  }
  if (fs::file_size(file) >= 20000) {
    ++kept;
    bytes += fs::file_size(file);
  }
  EXPECT_EQ(summary.train.documents, kept);
  EXPECT_EQ(summary.train.tokens, bytes);  // no BOS/EOS
  EXPECT_EQ(summary.skipped_documents, 25 + 1 - kept);
}

TEST_F(Prepare, BadInputsAreClearErrors) {
  PrepareOptions options;
  options.progress = false;
  expect_error([&] { prepare_corpus({dir_.file("missing")}, dir_.file("x.h5"), options); },
               {dir_.file("missing"), "does not exist"});
  fs::create_directories(dir_.path() / "nothing" / "inside");
  write_file(dir_.path() / "nothing" / "empty.txt", "");
  expect_error([&] { prepare_corpus({dir_.file("nothing")}, dir_.file("x.h5"), options); },
               {"empty corpus"});
  expect_error([&] { prepare_corpus({}, dir_.file("x.h5"), options); }, {"no inputs"});
  options.val_docs = 24;
  expect_error(
      [&] { prepare_corpus({(dir_.path() / "corpus").string()}, dir_.file("x.h5"), options); },
      {"24 validation documents", "none for training"});
  options.val_docs = -1;
  options.val_fraction = 1.5;
  expect_error(
      [&] { prepare_corpus({(dir_.path() / "corpus").string()}, dir_.file("x.h5"), options); },
      {"--val-fraction", "1.5"});
  EXPECT_FALSE(fs::exists(dir_.file("x.h5")));
}

}  // namespace
}  // namespace infllm::data
