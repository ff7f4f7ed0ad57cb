#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "data/token_file.h"
#include "test_util.h"

namespace infllm::data {
namespace {

using testing::expect_error;
using testing::RawTokenFile;
using testing::TempDir;
using testing::write_raw_token_file;

// Writes `docs` fresh random documents, some longer than the writer's buffer, and checks that
// every token, offset and attribute reads back.
void check_round_trip(int64_t vocab, int expected_bytes, uint64_t seed) {
  TempDir dir;
  const std::string path = dir.file("tokens.h5");
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint32_t> token(0, static_cast<uint32_t>(vocab - 1));
  std::uniform_int_distribution<int> length(1, 5000);
  std::vector<std::vector<uint32_t>> docs(300);
  docs[7].resize(1'500'000);  // crosses the writer's 1M-token buffer and many chunks
  for (auto& doc : docs) {
    if (doc.empty()) doc.resize(length(rng));
    for (uint32_t& t : doc) t = token(rng);
  }
  {
    TokenFileWriter writer(path, {vocab, "random", "test " + std::to_string(seed)});
    for (size_t d = 0; d < docs.size(); ++d) {
      if (d % 2 == 0) {
        writer.append_document(docs[d]);
      } else {  // the streaming path: a document in pieces
        const size_t half = docs[d].size() / 2;
        writer.append_tokens(std::span(docs[d]).first(half));
        writer.append_tokens(std::span(docs[d]).subspan(half));
        writer.end_document();
      }
    }
    EXPECT_FALSE(std::filesystem::exists(path)) << "published before close()";
    writer.close();
  }
  const TokenFile file(path);
  EXPECT_EQ(file.token_bytes(), expected_bytes);
  EXPECT_EQ(file.vocab_size(), vocab);
  EXPECT_EQ(file.attributes().tokenizer, "random");
  EXPECT_EQ(file.attributes().source, "test " + std::to_string(seed));
  ASSERT_EQ(file.num_documents(), static_cast<int64_t>(docs.size()));
  const std::vector<int64_t> offsets = file.doc_offsets();
  std::vector<uint32_t> all;
  for (size_t d = 0; d < docs.size(); ++d) {
    EXPECT_EQ(offsets[d], static_cast<int64_t>(all.size()));
    all.insert(all.end(), docs[d].begin(), docs[d].end());
  }
  ASSERT_EQ(file.num_tokens(), static_cast<int64_t>(all.size()));
  EXPECT_EQ(file.read(0, file.num_tokens()), all);
  // Random ranges, including empty ones and ones at the ends.
  std::uniform_int_distribution<int64_t> position(0, file.num_tokens());
  for (int i = 0; i < 200; ++i) {
    int64_t a = position(rng), b = position(rng);
    if (a > b) std::swap(a, b);
    const std::vector<uint32_t> expected(all.begin() + a, all.begin() + b);
    ASSERT_EQ(file.read(a, b), expected) << "range [" << a << ", " << b << ")";
  }
  EXPECT_EQ(file.read(file.num_tokens() - 3, file.num_tokens()),
            std::vector<uint32_t>(all.end() - 3, all.end()));
}

TEST(TokenFile, RoundTripU16) {
  check_round_trip(258, 2, 11);
}
TEST(TokenFile, RoundTripU16FullRange) {
  check_round_trip(65536, 2, 12);
}
TEST(TokenFile, RoundTripU32) {
  check_round_trip(65537, 4, 13);
}
TEST(TokenFile, RoundTripU32Large) {
  check_round_trip(int64_t{1} << 32, 4, 14);
}

TEST(TokenFile, WriterRefusesBadInput) {
  TempDir dir;
  const std::string path = dir.file("bad.h5");
  TokenFileWriter writer(path, {258, "byte", ""});
  const std::vector<uint32_t> out_of_vocab = {1, 2, 258};
  expect_error([&] { writer.append_document(out_of_vocab); }, {path, "258", "vocabulary"});
  expect_error([&] { writer.append_document({}); }, {path, "empty"});
  expect_error([&] { writer.end_document(); }, {path, "end_document"});
  expect_error(
      [&] {
        TokenFileWriter(dir.file("no/such/folder/x.h5"), {258, "byte", ""});
      },
      {"no/such/folder/x.h5", "output folder"});
  expect_error([&] { TokenFileWriter(dir.file("v.h5"), {0, "byte", ""}); }, {"vocab_size"});
}

TEST(TokenFile, AbandonedWriterLeavesNoFile) {
  TempDir dir;
  const std::string path = dir.file("abandoned.h5");
  {
    TokenFileWriter writer(path, {258, "byte", ""});
    const std::vector<uint32_t> doc = {1, 2, 3};
    writer.append_document(doc);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path())) << "temporary file left behind";
}

TEST(TokenFile, ReadsFilesWithFixedLengthStrings) {
  TempDir dir;
  std::mt19937_64 rng(21);
  RawTokenFile spec = testing::random_raw_file(rng, 5, 258);
  spec.fixed_length_strings = true;
  spec.tokenizer = "byte";
  spec.source = "made by another tool";
  write_raw_token_file(dir.file("fixed.h5"), spec);
  const TokenFile file(dir.file("fixed.h5"));
  EXPECT_EQ(file.attributes().tokenizer, "byte");
  EXPECT_EQ(file.attributes().source, "made by another tool");
  EXPECT_EQ(file.read(0, file.num_tokens()), spec.tokens);
}

// One malformed file per validation rule: the error names the file and the key.
class TokenFileValidation : public ::testing::Test {
 protected:
  void SetUp() override { good_ = testing::random_raw_file(rng_, 6, 258); }

  void expect_rejected(const RawTokenFile& spec, std::initializer_list<std::string> parts) {
    const std::string path = dir_.file("bad_" + std::to_string(counter_++) + ".h5");
    write_raw_token_file(path, spec);
    std::vector<std::string> all(parts);
    all.push_back(path);
    try {
      TokenFile file(path);
      ADD_FAILURE() << "opened a malformed file; expected an error mentioning " << *parts.begin();
    } catch (const infllm::Error& error) {
      const std::string message = error.what();
      for (const std::string& part : all) {
        EXPECT_NE(message.find(part), std::string::npos)
            << "message lacks \"" << part << "\": " << message;
      }
      EXPECT_NE(message.find("infllm prepare"), std::string::npos)
          << "message says no fix: " << message;
    }
  }

  TempDir dir_;
  std::mt19937_64 rng_{31};
  RawTokenFile good_;
  int counter_ = 0;
};

TEST_F(TokenFileValidation, AcceptsTheGoodFile) {
  write_raw_token_file(dir_.file("good.h5"), good_);
  const TokenFile file(dir_.file("good.h5"));
  EXPECT_EQ(file.num_documents(), 6);
}

TEST_F(TokenFileValidation, MissingDatasets) {
  RawTokenFile spec = good_;
  spec.token_type.reset();
  expect_rejected(spec, {"/tokens", "missing"});
  spec = good_;
  spec.offset_type.reset();
  expect_rejected(spec, {"/doc_offsets", "missing"});
}

TEST_F(TokenFileValidation, MissingAttributes) {
  RawTokenFile spec = good_;
  spec.vocab_size.reset();
  expect_rejected(spec, {"vocab_size", "missing"});
  spec = good_;
  spec.tokenizer.reset();
  expect_rejected(spec, {"tokenizer", "missing"});
  spec = good_;
  spec.source.reset();
  expect_rejected(spec, {"source", "missing"});
}

TEST_F(TokenFileValidation, WrongAttributeTypes) {
  RawTokenFile spec = good_;
  spec.vocab_size_as_string = true;
  expect_rejected(spec, {"vocab_size", "integer"});
  spec = good_;
  spec.tokenizer_as_integer = true;
  expect_rejected(spec, {"tokenizer", "string"});
}

TEST_F(TokenFileValidation, WrongTokenTypes) {
  for (hid_t type : {H5T_IEEE_F32LE, H5T_STD_I16LE, H5T_STD_U8LE, H5T_STD_U64LE}) {
    RawTokenFile spec = good_;
    spec.token_type = type;
    expect_rejected(spec, {"/tokens", "u16/u32"});
  }
  RawTokenFile spec = good_;
  spec.token_rank = 2;
  spec.tokens.resize(spec.tokens.size() / 2 * 2);
  expect_rejected(spec, {"/tokens", "1-D"});
}

TEST_F(TokenFileValidation, WrongOffsetTypes) {
  for (hid_t type : {H5T_STD_U64LE, H5T_STD_I32LE, H5T_IEEE_F64LE}) {
    RawTokenFile spec = good_;
    spec.offset_type = type;
    expect_rejected(spec, {"/doc_offsets", "i64"});
  }
}

TEST_F(TokenFileValidation, VocabularyTooLargeForU16) {
  RawTokenFile spec = good_;
  spec.vocab_size = 65537;
  expect_rejected(spec, {"vocab_size", "65537", "u16"});
  spec.vocab_size = 0;
  expect_rejected(spec, {"vocab_size", "0"});
}

TEST_F(TokenFileValidation, BadOffsets) {
  RawTokenFile spec = good_;
  spec.offsets[0] = 1;
  expect_rejected(spec, {"/doc_offsets[0]", "must be 0"});
  spec = good_;
  spec.offsets[3] = spec.offsets[2];
  expect_rejected(spec, {"/doc_offsets[3]", "increasing"});
  spec = good_;
  spec.offsets[4] = spec.offsets[2] - 1;
  expect_rejected(spec, {"/doc_offsets[4]", "increasing"});
  spec = good_;
  spec.offsets.back() = static_cast<int64_t>(spec.tokens.size());
  expect_rejected(spec, {"/doc_offsets[5]", "out of range"});
  spec = good_;
  spec.offsets.clear();
  expect_rejected(spec, {"/doc_offsets", "documents"});
}

TEST_F(TokenFileValidation, TokenOutsideVocabularyIsCaughtOnRead) {
  RawTokenFile spec = good_;
  spec.tokens[17] = 300;
  const std::string path = dir_.file("vocab.h5");
  write_raw_token_file(path, spec);
  const TokenFile file(path);
  EXPECT_EQ(file.read(0, 17).size(), 17u);
  expect_error([&] { file.read(10, 20); }, {path, "/tokens[17]", "300", "vocab"});
  expect_error([&] { file.read(5, file.num_tokens() + 1); }, {path, "outside"});
}

TEST_F(TokenFileValidation, MissingOrForeignFiles) {
  expect_error([&] { TokenFile file(dir_.file("nope.h5")); },
               {dir_.file("nope.h5"), "does not exist", "infllm prepare"});
  const std::string text = dir_.file("text.h5");
  std::ofstream(text) << "this is not HDF5\n";
  expect_error([&] { TokenFile file(text); }, {text, "not a readable HDF5 file"});
}

}  // namespace
}  // namespace infllm::data
