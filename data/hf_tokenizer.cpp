#include "data/hf_tokenizer.h"

#include <array>
#include <sstream>

#include "core/error.h"
#include "data/byte_tokenizer.h"
#include "data/json.h"
#include "data/sha256.h"

namespace infllm::data {
namespace {

constexpr const char* kSupported =
    "infllm decodes BPE tokenizers whose decoder is ByteLevel (GPT-2, Llama-3, Qwen) or "
    "SentencePiece-style (Replace, ByteFallback, Fuse, Strip, Metaspace: Llama-2, Mistral)";

// GPT-2's bytes_to_unicode: the printable bytes stand for themselves, the other 68 (controls,
// space, 0x7F-0xA0, 0xAD) for U+0100 onwards in byte order. Index: byte -> code point.
std::array<uint32_t, 256> byte_to_code_point() {
  std::array<uint32_t, 256> table{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    table[b] = printable ? b : next++;
  }
  return table;
}

// Code point -> byte for the table above; -1 for code points it does not use.
const std::vector<int>& code_point_to_byte() {
  static const std::vector<int> reverse = [] {
    std::vector<int> out(324, -1);  // the largest code point is U+0143
    const auto table = byte_to_code_point();
    for (int b = 0; b < 256; ++b) out[table[size_t(b)]] = b;
    return out;
  }();
  return reverse;
}

// The UTF-8 characters of a valid string, each as its bytes.
std::vector<std::string_view> characters(std::string_view text) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < text.size();) {
    const int length = utf8_sequence_length(
        std::span(reinterpret_cast<const unsigned char*>(text.data()) + i, text.size() - i));
    const size_t n = length > 0 ? size_t(length) : 1;
    out.push_back(text.substr(i, n));
    i += n;
  }
  return out;
}

uint32_t code_point(std::string_view c) {
  const auto* b = reinterpret_cast<const unsigned char*>(c.data());
  if (c.size() == 1) return b[0];
  if (c.size() == 2) return (b[0] & 0x1Fu) << 6 | (b[1] & 0x3Fu);
  if (c.size() == 3) return (b[0] & 0x0Fu) << 12 | (b[1] & 0x3Fu) << 6 | (b[2] & 0x3Fu);
  return 0x110000;  // 4 bytes: beyond the table
}

// ByteLevel's per-token rule: every character through the table, or - when one is not in
// it - the token's own UTF-8 bytes.
std::string byte_level_bytes(const std::string& token) {
  const std::vector<int>& reverse = code_point_to_byte();
  std::string out;
  for (std::string_view c : characters(token)) {
    const uint32_t cp = code_point(c);
    if (cp >= reverse.size() || reverse[cp] < 0) return token;
    out += char(reverse[cp]);
  }
  return out;
}

// "<0xNN>" -> the byte NN.
std::optional<char> fallback_byte(const std::string& token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>') return std::nullopt;
  unsigned value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = token[i];
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                             : -1;
    if (digit < 0) return std::nullopt;
    value = value * 16 + unsigned(digit);
  }
  return char(value);
}

bool valid_utf8(std::string_view bytes) {
  for (size_t i = 0; i < bytes.size();) {
    const int length = utf8_sequence_length(
        std::span(reinterpret_cast<const unsigned char*>(bytes.data()) + i, bytes.size() - i));
    if (length == 0) return false;
    i += size_t(length);
  }
  return true;
}

// Rust's String::from_utf8_lossy: each maximal prefix of a valid sequence that breaks off (or
// a byte that starts none) becomes one U+FFFD.
std::string lossy_utf8(std::string_view bytes) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    const int length = utf8_sequence_length(std::span(b + i, bytes.size() - i));
    if (length > 0) {
      out.append(bytes.substr(i, size_t(length)));
      i += size_t(length);
      continue;
    }
    const unsigned lead = b[i];
    const size_t expected = lead >= 0xC2 && lead <= 0xDF   ? 2
                            : lead >= 0xE0 && lead <= 0xEF ? 3
                            : lead >= 0xF0 && lead <= 0xF4 ? 4
                                                           : 1;
    // The second byte's range depends on the lead (no overlong forms, surrogates, > U+10FFFF).
    const unsigned low = lead == 0xE0 ? 0xA0 : lead == 0xF0 ? 0x90 : 0x80;
    const unsigned high = lead == 0xED ? 0x9F : lead == 0xF4 ? 0x8F : 0xBF;
    size_t k = 1;
    while (k < expected && i + k < bytes.size() && b[i + k] >= (k == 1 ? low : 0x80u) &&
           b[i + k] <= (k == 1 ? high : 0xBFu))
      ++k;
    out += kReplacement;
    i += k;
  }
  return out;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string hf_tokenizer_id(std::string_view tokenizer_json) {
  return std::string(kHfTokenizerPrefix) + sha256_hex(tokenizer_json).substr(0, 16);
}

HfTokenizer HfTokenizer::from_file(const std::string& path) {
  return HfTokenizer(read_text_file(path), path);
}

HfTokenizer::HfTokenizer(const std::string& json, const std::string& source)
    : id_(hf_tokenizer_id(json)) {
  const YAML::Node root = parse_json(json, source);
  const YAML::Node model = root["model"];
  INFLLM_CHECK(model && model.IsMap(), source, ": field model is missing or not an object; is ",
               "this a Hugging Face tokenizer.json?");
  // Files written before the model carried a type are BPE when they have merges.
  const std::string type = json_has(model, "type")
                               ? json_field<std::string>(model, source, "type", "a string")
                               : (model["merges"] ? "BPE" : "(none)");
  INFLLM_CHECK(type == "BPE", source, ": field model.type is '", type, "'; ", kSupported,
               " (WordPiece, Unigram and WordLevel tokenizers are not supported)");
  const YAML::Node vocab = model["vocab"];
  INFLLM_CHECK(vocab && vocab.IsMap(), source,
               ": field model.vocab must be an object (token -> id)");
  auto add = [&](const std::string& token, int64_t id, bool special, const char* field) {
    INFLLM_CHECK(id >= 0 && id < (int64_t{1} << 32), source, ": field ", field, ": id ", id,
                 " of '", token, "' is outside [0, 2^32)");
    if (size_t(id) >= tokens_.size()) {
      tokens_.resize(size_t(id) + 1);
      present_.resize(size_t(id) + 1);
      special_.resize(size_t(id) + 1);
    }
    tokens_[size_t(id)] = token;
    present_[size_t(id)] = true;
    special_[size_t(id)] = special;
    ids_[token] = uint32_t(id);
  };
  for (const auto& entry : vocab) {
    // entry.second, not vocab[token]: a lookup by key scans the whole map.
    const std::string token = entry.first.as<std::string>();
    int64_t id = -1;
    try {
      id = entry.second.as<int64_t>();
    } catch (const YAML::Exception&) {
      fail(source, ": field model.vocab: the id of '", token, "' must be a whole number, got '",
           YAML::Dump(entry.second), "'");
    }
    add(token, id, false, "model.vocab");
  }
  if (const YAML::Node added = root["added_tokens"]; added && added.IsSequence()) {
    for (const YAML::Node& token : added) {
      INFLLM_CHECK(token.IsMap() && json_has(token, "id") && json_has(token, "content"), source,
                   ": field added_tokens: each entry needs id and content");
      add(json_field<std::string>(token, source, "content", "a string"),
          json_field<int64_t>(token, source, "id", "a whole number"),
          json_has(token, "special") && json_field<bool>(token, source, "special", "true or false"),
          "added_tokens");
    }
  }
  INFLLM_CHECK(!tokens_.empty(), source, ": field model.vocab is empty");

  const YAML::Node decoder = root["decoder"];
  INFLLM_CHECK(json_has(root, "decoder"), source,
               ": field decoder is null: the file does not say how tokens become text; ",
               kSupported);
  std::vector<std::pair<YAML::Node, std::string>> parts;  // each step and its field name
  const std::string top = json_field<std::string>(decoder, source, "type", "a string");
  if (top == "Sequence") {
    const YAML::Node list = decoder["decoders"];
    INFLLM_CHECK(list && list.IsSequence(), source, ": field decoder.decoders must be a list");
    for (size_t i = 0; i < list.size(); ++i)
      parts.emplace_back(list[i], "decoder.decoders[" + std::to_string(i) + "]");
  } else {
    parts.emplace_back(decoder, "decoder");
  }
  for (const auto& [node, field] : parts) {
    Step step;
    step.type = json_field<std::string>(node, source, "type", "a string");
    auto text = [&](const char* key, const char* fallback) {
      return json_has(node, key) ? json_field<std::string>(node, source, key, "a string")
                                 : std::string(fallback);
    };
    if (step.type == "Replace") {
      const YAML::Node pattern = node["pattern"];
      INFLLM_CHECK(pattern && pattern.IsMap() && json_has(pattern, "String"), source, ": field ",
                   field, ".pattern must be {\"String\": ...}; a Regex pattern (a regular-",
                   "expression Replace decoder) is not supported");
      step.from = json_field<std::string>(pattern, source, "String", "a string");
      step.to = text("content", "");
    } else if (step.type == "Strip") {
      step.from = text("content", " ");
      step.start =
          json_has(node, "start") ? json_field<int64_t>(node, source, "start", "a number") : 0;
      step.stop =
          json_has(node, "stop") ? json_field<int64_t>(node, source, "stop", "a number") : 0;
    } else if (step.type == "Metaspace") {
      step.from = text("replacement", "\xE2\x96\x81");  // U+2581
      step.to = " ";
      // prepend_scheme (tokenizers >= 0.15) or add_prefix_space (before): the first token's
      // replacement characters are dropped unless nothing was ever prepended.
      step.strip_first =
          json_has(node, "prepend_scheme")
              ? text("prepend_scheme", "always") != "never"
              : !json_has(node, "add_prefix_space") ||
                    json_field<bool>(node, source, "add_prefix_space", "true or false");
    } else {
      INFLLM_CHECK(step.type == "ByteLevel" || step.type == "ByteFallback" || step.type == "Fuse",
                   source, ": field ", field, ".type is '", step.type, "'; ", kSupported);
    }
    steps_.push_back(std::move(step));
  }
}

std::optional<uint32_t> HfTokenizer::token_id(std::string_view token) const {
  const auto found = ids_.find(std::string(token));
  if (found == ids_.end()) return std::nullopt;
  return found->second;
}

// One decoder step over the token list, as `tokenizers` applies it (decode_chain).
std::vector<std::string> HfTokenizer::apply(const Step& step,
                                            std::vector<std::string> tokens) const {
  if (step.type == "ByteLevel") {
    std::string bytes;
    for (const std::string& token : tokens) bytes += byte_level_bytes(token);
    return {lossy_utf8(bytes)};
  }
  if (step.type == "Fuse") {
    std::string joined;
    for (const std::string& token : tokens) joined += token;
    return {joined};
  }
  if (step.type == "ByteFallback") {
    // Consecutive "<0xNN>" tokens form one byte string: its text when it is UTF-8, otherwise
    // one U+FFFD per byte.
    std::vector<std::string> out;
    std::string pending;
    size_t pending_count = 0;
    auto flush = [&] {
      if (pending_count == 0) return;
      if (valid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending_count; ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
      pending_count = 0;
    };
    for (std::string& token : tokens) {
      if (const auto byte = fallback_byte(token)) {
        pending += *byte;
        ++pending_count;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    return out;
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string& token = tokens[i];
    if (step.type == "Replace") {
      token = replace_all(std::move(token), step.from, step.to);
    } else if (step.type == "Metaspace") {
      token = replace_all(std::move(token), step.from, i == 0 && step.strip_first ? "" : " ");
    } else if (step.type == "Strip") {
      std::vector<std::string_view> chars = characters(token);
      size_t begin = 0, end = chars.size();
      while (begin < end && begin < size_t(step.start) && chars[begin] == step.from) ++begin;
      while (end > begin && chars.size() - end < size_t(step.stop) && chars[end - 1] == step.from)
        --end;
      std::string kept;
      for (size_t k = begin; k < end; ++k) kept += chars[k];
      token = std::move(kept);
    }
  }
  return tokens;
}

std::string HfTokenizer::decode(std::span<const uint32_t> ids) const {
  std::vector<std::string> tokens;
  for (const uint32_t id : ids)
    if (id < tokens_.size() && present_[id] && !special_[id]) tokens.push_back(tokens_[id]);
  for (const Step& step : steps_) tokens = apply(step, std::move(tokens));
  std::string text;
  for (const std::string& token : tokens) text += token;
  return lossy_utf8(text);
}

std::string HfTokenizer::token_bytes(uint32_t id) const {
  if (id >= tokens_.size() || !present_[id] || special_[id]) return "";
  std::string token = tokens_[id];
  for (const Step& step : steps_) {
    if (step.type == "ByteLevel") {
      token = byte_level_bytes(token);
    } else if (step.type == "ByteFallback") {
      if (const auto byte = fallback_byte(token)) token = std::string(1, *byte);
    } else if (step.type == "Replace" || step.type == "Metaspace") {
      token = replace_all(std::move(token), step.from, step.to);
    }  // Fuse joins and Strip trims the text's ends: nothing in the middle of a text
  }
  return token;
}

std::string byte_tokenizer_json() {
  const auto table = byte_to_code_point();
  std::ostringstream vocab;
  for (uint32_t b = 0; b < 256; ++b) {
    std::string character;
    append_utf8(table[b], character);
    vocab << (b ? ",\n      " : "") << json_string(character) << ": " << b;
  }
  auto special = [](uint32_t id, std::string_view content) {
    return "    {\"id\": " + std::to_string(id) + ", \"content\": " + json_string(content) +
           ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": "
           "false, \"special\": true}";
  };
  const std::string bos = json_string(kByteBosToken);
  // use_regex false: without merges the split into words changes nothing; each byte is a token.
  const std::string byte_level =
      R"({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, )"
      R"("use_regex": false})";
  std::ostringstream out;
  out << "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n"
      << "  \"added_tokens\": [\n"
      << special(ByteTokenizer::kBos, kByteBosToken) << ",\n"
      << special(ByteTokenizer::kEos, kByteEosToken) << "\n  ],\n"
      << "  \"normalizer\": null,\n  \"pre_tokenizer\": " << byte_level << ",\n"
      << "  \"post_processor\": {\"type\": \"TemplateProcessing\",\n"
      << "    \"single\": [{\"SpecialToken\": {\"id\": " << bos << ", \"type_id\": 0}}, "
      << "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],\n"
      << "    \"pair\": [{\"SpecialToken\": {\"id\": " << bos << ", \"type_id\": 0}}, "
      << "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"SpecialToken\": {\"id\": " << bos
      << ", \"type_id\": 1}}, {\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}],\n"
      << "    \"special_tokens\": {" << bos << ": {\"id\": " << bos << ", \"ids\": ["
      << ByteTokenizer::kBos << "], \"tokens\": [" << bos << "]}}},\n"
      << "  \"decoder\": " << byte_level << ",\n"
      << "  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
      << "\"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": "
      << "false, \"byte_fallback\": false, \"ignore_merges\": false,\n"
      << "    \"vocab\": {\n      " << vocab.str() << "\n    },\n    \"merges\": []\n  }\n}\n";
  return out.str();
}

std::string byte_tokenizer_config_json() {
  return "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n  \"bos_token\": " +
         json_string(kByteBosToken) + ",\n  \"eos_token\": " + json_string(kByteEosToken) +
         ",\n  \"add_bos_token\": true,\n  \"add_eos_token\": false,\n"
         "  \"clean_up_tokenization_spaces\": false,\n  \"split_special_tokens\": true,\n"
         "  \"model_max_length\": 1000000000\n}\n";
}

std::string byte_special_tokens_map_json() {
  return "{\n  \"bos_token\": " + json_string(kByteBosToken) +
         ",\n  \"eos_token\": " + json_string(kByteEosToken) + "\n}\n";
}

}  // namespace infllm::data
