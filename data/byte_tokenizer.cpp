#include "data/byte_tokenizer.h"

#include "core/error.h"

namespace infllm::data {

std::vector<uint32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<uint32_t> tokens;
  encode_append(text, tokens);
  return tokens;
}

void ByteTokenizer::encode_append(std::string_view text, std::vector<uint32_t>& out) const {
  out.reserve(out.size() + text.size());
  for (char c : text) out.push_back(static_cast<unsigned char>(c));
}

int utf8_sequence_length(std::span<const unsigned char> bytes) {
  if (bytes.empty()) return 0;
  const unsigned char lead = bytes[0];
  if (lead < 0x80) return 1;
  int length = 0;
  uint32_t code_point = 0;
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    code_point = lead & 0x07;
  } else {
    return 0;  // a continuation byte or 0xF8..0xFF cannot start a character
  }
  if (bytes.size() < static_cast<size_t>(length)) return 0;
  for (int i = 1; i < length; ++i) {
    if ((bytes[i] & 0xC0) != 0x80) return 0;
    code_point = (code_point << 6) | (bytes[i] & 0x3F);
  }
  static constexpr uint32_t kSmallestForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (code_point < kSmallestForLength[length]) return 0;       // overlong encoding
  if (code_point >= 0xD800 && code_point <= 0xDFFF) return 0;  // UTF-16 surrogate
  if (code_point > 0x10FFFF) return 0;
  return length;
}

namespace {

// Appends `bytes` to `text`, replacing every byte that does not begin a valid sequence.
void append_sanitized(const std::vector<unsigned char>& bytes, std::string& text) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  size_t i = 0;
  while (i < bytes.size()) {
    const int length = utf8_sequence_length(std::span(bytes).subspan(i));
    if (length == 0) {
      text += kReplacement;
      i += 1;
    } else {
      text.append(reinterpret_cast<const char*>(&bytes[i]), length);
      i += length;
    }
  }
}

}  // namespace

std::string ByteTokenizer::decode(std::span<const uint32_t> tokens) const {
  // Specials split the bytes into runs; a character never spans a document boundary.
  std::string text;
  std::vector<unsigned char> run;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint32_t token = tokens[i];
    INFLLM_CHECK(token < kVocabSize, "byte tokenizer: token ", token, " at position ", i,
                 " is outside the vocabulary [0, ", kVocabSize,
                 "); was this text encoded with another tokenizer?");
    if (token < 256) {
      run.push_back(static_cast<unsigned char>(token));
    } else {
      append_sanitized(run, text);
      run.clear();
    }
  }
  append_sanitized(run, text);
  return text;
}

}  // namespace infllm::data
