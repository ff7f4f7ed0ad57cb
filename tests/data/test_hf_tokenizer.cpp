// data/hf_tokenizer.h on tokenizer.json files the tests write themselves: byte-level BPE
// (GPT-2 / Llama-3 style), SentencePiece-style BPE (Llama-2 / Mistral: Replace, ByteFallback,
// Fuse, Strip; and Metaspace), the byte tokenizer's own tokenizer.json, the errors for what is
// not supported, and the JSON and SHA-256 underneath. The expected strings follow what the
// `tokenizers` library returns for the same files (tests/data/check_prepare_hf.py compares the
// two on trained tokenizers where the library is installed).
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "core/error.h"
#include "data/byte_tokenizer.h"
#include "data/hf_tokenizer.h"
#include "data/json.h"
#include "data/sha256.h"
#include "tests/data/test_util.h"

namespace infllm::data {
namespace {

using ::infllm::testing::error_of;
using testing::TempDir;

// A Llama-3-like byte-level file: "Ġ" is the space byte, "Ã©" the two bytes of "é", and the
// four bytes of U+1F600 split over two tokens ("ðŁ" + "ĺĢ").
const char* kByteLevelJson = R"({
  "version": "1.0",
  "added_tokens": [
    {"id": 10, "content": "<|begin_of_text|>", "special": true},
    {"id": 11, "content": "<|end_of_text|>", "special": true},
    {"id": 12, "content": "中x", "special": false}
  ],
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true},
  "model": {"type": "BPE", "vocab": {"H": 0, "i": 1, "Ġthere": 2, "Ã©": 3, "ðŁ": 4, "ĺĢ": 5,
                                     "Ċ": 6, "Ã": 7, "\"q\"": 8, "\u00e9t\u00e9": 9},
            "merges": []}
})";

TEST(HfTokenizer, DecodesByteLevelBpe) {
  const HfTokenizer t(kByteLevelJson, "byte_level.json");
  EXPECT_EQ(t.vocab_size(), 13);
  EXPECT_EQ(t.token_id("Ġthere"), 2u);
  EXPECT_EQ(t.token_id("<|end_of_text|>"), 11u);
  EXPECT_FALSE(t.token_id("nothing").has_value());
  EXPECT_TRUE(t.is_special(10));
  EXPECT_FALSE(t.is_special(12));
  const std::vector<uint32_t> ids = {10, 0, 1, 2, 3, 6, 4, 5, 8, 11};
  EXPECT_EQ(t.decode(ids), "Hi there\xC3\xA9\n\xF0\x9F\x98\x80\"q\"");
  // Token by token the bytes concatenate to the same text (specials add nothing).
  std::string streamed;
  for (uint32_t id : ids) streamed += t.token_bytes(id);
  EXPECT_EQ(streamed, t.decode(ids));
  EXPECT_EQ(t.token_bytes(4), "\xF0\x9F");  // half a character: raw bytes, no U+FFFD
  // Cut after the first half of the emoji, decode() replaces the broken tail like Rust's
  // from_utf8_lossy (one U+FFFD for the maximal prefix "F0 9F").
  EXPECT_EQ(t.decode(std::vector<uint32_t>{0, 4}), "H\xEF\xBF\xBD");
  // A lone byte that starts nothing: one U+FFFD for it ("Ã" alone is byte C3).
  EXPECT_EQ(t.decode(std::vector<uint32_t>{7, 1}), "\xEF\xBF\xBDi");
  // A token with a character outside the byte table stands for its own UTF-8 ("中x"); one
  // whose characters are all in the table is bytes ("été" -> E9 74 E9, not UTF-8).
  EXPECT_EQ(t.decode(std::vector<uint32_t>{12}),
            "\xE4\xB8\xAD"
            "x");
  EXPECT_EQ(t.decode(std::vector<uint32_t>{9}), "\xEF\xBF\xBDt\xEF\xBF\xBD");
  // Ids without an entry (a model's padded rows) decode to nothing.
  EXPECT_EQ(t.decode(std::vector<uint32_t>{0, 400, 1}), "Hi");
  EXPECT_EQ(t.token_bytes(400), "");
}

// transformers' conversion of Llama-2's SentencePiece model.
const char* kLlama2Json = R"({
  "added_tokens": [{"id": 0, "content": "<unk>", "special": true},
                   {"id": 1, "content": "<s>", "special": true},
                   {"id": 2, "content": "</s>", "special": true}],
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                 {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true,
            "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "<0xE2>": 4, "<0x82>": 5,
                      "<0xAC>": 6, "▁Hello": 7, "▁world": 8, "!": 9, "▁▁": 10},
            "merges": []}
})";

TEST(HfTokenizer, DecodesSentencePieceStyleBpe) {
  const HfTokenizer t(kLlama2Json, "llama2.json");
  EXPECT_EQ(t.vocab_size(), 11);
  // The first token's leading space goes (Strip start 1), the byte tokens join into "€".
  EXPECT_EQ(t.decode(std::vector<uint32_t>{1, 7, 8, 3, 4, 5, 6, 9, 2}), "Hello world\n€!");
  // Strip takes one space only.
  EXPECT_EQ(t.decode(std::vector<uint32_t>{10, 7}), "  Hello");
  // A byte run that is not UTF-8: one U+FFFD per byte, as ByteFallback does.
  EXPECT_EQ(t.decode(std::vector<uint32_t>{7, 4, 5, 9}), "Hello\xEF\xBF\xBD\xEF\xBF\xBD!");
  // In the middle of a text nothing is stripped, and byte tokens are raw bytes.
  EXPECT_EQ(t.token_bytes(7), " Hello");
  EXPECT_EQ(t.token_bytes(4), "\xE2");
  EXPECT_EQ(t.token_bytes(1), "");
}

TEST(HfTokenizer, DecodesMetaspace) {
  std::string json = R"({"decoder": {"type": "Metaspace", "replacement": "▁",
    "prepend_scheme": "first", "split": false},
    "model": {"type": "BPE", "vocab": {"▁a▁b": 0, "▁c": 1}, "merges": []}})";
  // tokenizers drops every replacement character of the first token (not only the first).
  EXPECT_EQ(HfTokenizer(json, "m.json").decode(std::vector<uint32_t>{0, 1}), "ab c");
  json.replace(json.find("first"), 5, "never");
  EXPECT_EQ(HfTokenizer(json, "m.json").decode(std::vector<uint32_t>{0, 1}), " a b c");
  // Before prepend_scheme: add_prefix_space.
  const std::string older = R"({"decoder": {"type": "Metaspace", "replacement": "▁",
    "add_prefix_space": true}, "model": {"type": "BPE", "vocab": {"▁x": 0}, "merges": []}})";
  EXPECT_EQ(HfTokenizer(older, "m.json").decode(std::vector<uint32_t>{0, 0}), "x x");
}

TEST(HfTokenizer, ByteTokenizerJsonGivesEachByteItsOwnId) {
  const HfTokenizer t(byte_tokenizer_json(), "byte tokenizer.json");
  EXPECT_EQ(t.vocab_size(), int64_t(ByteTokenizer::kVocabSize));
  for (uint32_t b = 0; b < 256; ++b) {
    ASSERT_EQ(t.token_bytes(b), std::string(1, char(b))) << "byte " << b;
    ASSERT_FALSE(t.is_special(b));
  }
  EXPECT_EQ(t.token_id(kByteBosToken), ByteTokenizer::kBos);
  EXPECT_EQ(t.token_id(kByteEosToken), ByteTokenizer::kEos);
  EXPECT_TRUE(t.is_special(ByteTokenizer::kBos) && t.is_special(ByteTokenizer::kEos));
  // Our encoding of any valid text, wrapped in BOS/EOS, decodes back to it.
  std::mt19937 rng(7);
  std::string text;
  for (int i = 0; i < 2000; ++i) {
    const uint32_t cp = std::uniform_int_distribution<uint32_t>(1, 0x2FFF)(rng);
    if (cp < 0x80) {
      text += char(cp);
    } else if (cp < 0x800) {
      text += char(0xC0 | (cp >> 6));
      text += char(0x80 | (cp & 0x3F));
    } else {
      text += char(0xE0 | (cp >> 12));
      text += char(0x80 | ((cp >> 6) & 0x3F));
      text += char(0x80 | (cp & 0x3F));
    }
  }
  std::vector<uint32_t> ids = {ByteTokenizer::kBos};
  ByteTokenizer().encode_append(text, ids);
  ids.push_back(ByteTokenizer::kEos);
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_EQ(t.decode(ids), ByteTokenizer().decode(ids));
  // The same file every time: its id names the export's tokenizer.
  EXPECT_EQ(byte_tokenizer_json(), byte_tokenizer_json());
  EXPECT_EQ(t.id(), hf_tokenizer_id(byte_tokenizer_json()));
  // The companion files are JSON naming the same specials.
  const YAML::Node config = parse_json(byte_tokenizer_config_json(), "tokenizer_config.json");
  EXPECT_EQ(config["bos_token"].as<std::string>(), kByteBosToken);
  EXPECT_TRUE(config["split_special_tokens"].as<bool>());
  EXPECT_EQ(parse_json(byte_special_tokens_map_json(), "map")["eos_token"].as<std::string>(),
            kByteEosToken);
}

TEST(HfTokenizer, ReadsTheFileAndNamesIt) {
  TempDir dir;
  std::ofstream(dir.file("tokenizer.json")) << kLlama2Json;
  const HfTokenizer t = HfTokenizer::from_file(dir.file("tokenizer.json"));
  EXPECT_EQ(t.id(), hf_tokenizer_id(kLlama2Json));
  EXPECT_EQ(t.id().size(), kHfTokenizerPrefix.size() + 16);
  EXPECT_EQ(t.id(), std::string(kHfTokenizerPrefix) + sha256_hex(kLlama2Json).substr(0, 16));
  const std::string missing = error_of([&] { HfTokenizer::from_file(dir.file("none.json")); });
  EXPECT_NE(missing.find("none.json"), std::string::npos) << missing;
}

TEST(HfTokenizer, RefusesWhatItCannotDecodeNamingFileAndField) {
  struct Case {
    std::string json, field, value;
  };
  const std::string bpe = R"("model": {"type": "BPE", "vocab": {"a": 0}, "merges": []})";
  const std::vector<Case> cases = {
      {R"({"decoder": {"type": "WordPiece"}, "model": {"type": "WordPiece", "vocab": {"a": 0}}})",
       "model.type", "WordPiece"},
      {R"({"decoder": {"type": "Metaspace"}, "model": {"type": "Unigram", "vocab": [["a", 0.0]]}})",
       "model.type", "Unigram"},
      {R"({"decoder": {"type": "WordPiece", "prefix": "##"}, )" + bpe + "}", "decoder.type",
       "WordPiece"},
      {R"({"decoder": {"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "CTC"}]}, )" +
           bpe + "}",
       "decoder.decoders[1].type", "CTC"},
      {R"({"decoder": null, )" + bpe + "}", "decoder", "null"},
      {R"({"decoder": {"type": "Replace", "pattern": {"Regex": " +"}, "content": " "}, )" + bpe +
           "}",
       "decoder.pattern", "Regex"},
      {R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": "x"}}})",
       "model.vocab", "whole number"},
      {R"({"decoder": {"type": "ByteLevel"}})", "model", "missing"},
      {"{\"model\": [1, 2", "not valid JSON", ""},
  };
  for (const Case& c : cases) {
    const std::string message = error_of([&] { HfTokenizer(c.json, "/m/tokenizer.json"); });
    EXPECT_NE(message.find("/m/tokenizer.json"), std::string::npos) << message;
    EXPECT_NE(message.find(c.field), std::string::npos) << message;
    EXPECT_NE(message.find(c.value), std::string::npos) << message;
  }
  // The supported kinds are named where a model or decoder is refused.
  const std::string message = error_of([&] { HfTokenizer(cases[1].json, "t.json"); });
  EXPECT_NE(message.find("ByteLevel"), std::string::npos) << message;
  EXPECT_NE(message.find("SentencePiece"), std::string::npos) << message;
}

TEST(Json, JoinsEscapedSurrogatePairs) {
  // Python's json.dump (ensure_ascii) writes U+1F600 as a surrogate pair; yaml-cpp alone
  // refuses it. An escaped backslash before "ud83d" is not an escape.
  const YAML::Node root =
      parse_json(R"({"a": "x\ud83d\ude00y", "b": "\\ud83d", "c": "\u00e9\n"})", "s.json");
  EXPECT_EQ(root["a"].as<std::string>(), "x\xF0\x9F\x98\x80y");
  EXPECT_EQ(root["b"].as<std::string>(), "\\ud83d");
  EXPECT_EQ(root["c"].as<std::string>(), "\xC3\xA9\n");
  const std::string lone = error_of([] { parse_json(R"({"a": "\ud83d"})", "lone.json"); });
  EXPECT_NE(lone.find("lone.json: not valid JSON"), std::string::npos) << lone;
  EXPECT_NE(error_of([] { parse_json("[1]", "list.json"); }).find("not a JSON object"),
            std::string::npos);
}

TEST(Json, ReadsKeysLongerThanYamlAllows) {
  // yaml-cpp takes implicit keys up to 1024 characters; a vocabulary may hold longer tokens.
  const std::string key(3000, 'k'), value(3000, 'v');
  const YAML::Node root = parse_json("{\"" + key + "\" :\n 1, \"v\": \"" + value + "\", \"" + key +
                                         "x\": {\"" + key + "\": [\"" + value + "\"]}}",
                                     "long.json");
  EXPECT_EQ(root[key].as<int>(), 1);
  EXPECT_EQ(root["v"].as<std::string>(), value);
  EXPECT_EQ(root[key + "x"][key][0].as<std::string>(), value);
}

TEST(Sha256, MatchesTheStandardVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 56 bytes: the padding needs a second block.
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

}  // namespace
}  // namespace infllm::data
