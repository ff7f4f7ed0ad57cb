#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "data/byte_tokenizer.h"

namespace infllm::data {
namespace {

TEST(ByteTokenizer, EncodesEachByteAsOneToken) {
  const ByteTokenizer tokenizer;
  const std::string text = "a\xC3\xA9\n";  // 'a', U+00E9 in two bytes, newline
  const std::vector<uint32_t> tokens = tokenizer.encode(text);
  EXPECT_EQ(tokens, (std::vector<uint32_t>{0x61, 0xC3, 0xA9, 0x0A}));
  EXPECT_EQ(ByteTokenizer::kVocabSize, 258u);
  EXPECT_EQ(ByteTokenizer::kName, "byte");
}

TEST(ByteTokenizer, RoundTripsRandomValidUtf8) {
  const ByteTokenizer tokenizer;
  std::mt19937 rng(1234);
  // Code points from every UTF-8 length class, avoiding surrogates.
  std::uniform_int_distribution<uint32_t> pick(0, 3);
  std::string text;
  for (int i = 0; i < 5000; ++i) {
    uint32_t cp;
    switch (pick(rng)) {
      case 0:
        cp = std::uniform_int_distribution<uint32_t>(1, 0x7F)(rng);
        break;
      case 1:
        cp = std::uniform_int_distribution<uint32_t>(0x80, 0x7FF)(rng);
        break;
      case 2:
        cp = std::uniform_int_distribution<uint32_t>(0xE000, 0xFFFD)(rng);
        break;
      default:
        cp = std::uniform_int_distribution<uint32_t>(0x10000, 0x10FFFF)(rng);
        break;
    }
    if (cp < 0x80) {
      text += static_cast<char>(cp);
    } else if (cp < 0x800) {
      text += static_cast<char>(0xC0 | (cp >> 6));
      text += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      text += static_cast<char>(0xE0 | (cp >> 12));
      text += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      text += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      text += static_cast<char>(0xF0 | (cp >> 18));
      text += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      text += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      text += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  const std::vector<uint32_t> tokens = tokenizer.encode(text);
  EXPECT_EQ(tokens.size(), text.size());
  EXPECT_EQ(tokenizer.decode(tokens), text);
}

TEST(ByteTokenizer, DecodeDropsSpecials) {
  const ByteTokenizer tokenizer;
  std::vector<uint32_t> tokens = {ByteTokenizer::kBos};
  for (uint32_t t : tokenizer.encode("first")) tokens.push_back(t);
  tokens.push_back(ByteTokenizer::kEos);
  tokens.push_back(ByteTokenizer::kBos);
  for (uint32_t t : tokenizer.encode(" second")) tokens.push_back(t);
  EXPECT_EQ(tokenizer.decode(tokens), "first second");
}

TEST(ByteTokenizer, DecodeReplacesInvalidUtf8) {
  const ByteTokenizer tokenizer;
  const std::string replacement = "\xEF\xBF\xBD";
  auto decode = [&](const std::string& bytes) { return tokenizer.decode(tokenizer.encode(bytes)); };
  EXPECT_EQ(decode("a\xFF"
                   "b"),
            "a" + replacement + "b");                               // never a lead byte
  EXPECT_EQ(decode("\xA9z"), replacement + "z");                    // lone continuation byte
  EXPECT_EQ(decode("x\xE2\x82"), "x" + replacement + replacement);  // cut 3-byte character
  EXPECT_EQ(decode("\xC0\xAF"), replacement + replacement);         // overlong '/'
  EXPECT_EQ(decode("\xED\xA0\x80"), replacement + replacement + replacement);  // surrogate
  const std::string four = replacement + replacement + replacement + replacement;
  EXPECT_EQ(decode("\xF4\x90\x80\x80"), four);  // above U+10FFFF
  // A character split by a document boundary is not glued back together.
  const std::vector<uint32_t> split = {0xC3, ByteTokenizer::kEos, 0xA9};
  EXPECT_EQ(tokenizer.decode(split), replacement + replacement);
}

TEST(ByteTokenizer, DecodeRejectsTokensOutsideVocabulary) {
  const ByteTokenizer tokenizer;
  const std::vector<uint32_t> tokens = {65, 258};
  try {
    tokenizer.decode(tokens);
    FAIL() << "expected an error";
  } catch (const infllm::Error& error) {
    EXPECT_NE(std::string(error.what()).find("258"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace infllm::data
