// Byte-level tokenizer: every byte of the UTF-8 text is one token (0..255), plus two specials
// that mark document boundaries in the token stream. Needs no vocabulary file, so any text
// trains, and any token file written with it decodes back to the exact bytes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace infllm::data {

class ByteTokenizer {
 public:
  static constexpr uint32_t kBos = 256;  // begins each document
  static constexpr uint32_t kEos = 257;  // ends each document
  static constexpr uint32_t kVocabSize = 258;
  static constexpr std::string_view kName = "byte";  // the `tokenizer` attribute of token files

  // One token per byte; no specials are added (the caller decides where documents begin/end).
  std::vector<uint32_t> encode(std::string_view text) const;
  // Appends the tokens of `text` to `out` (for streaming a large document chunk by chunk).
  void encode_append(std::string_view text, std::vector<uint32_t>& out) const;

  // Bytes back to text. BOS/EOS are dropped; byte sequences that are not valid UTF-8 (for
  // example a window that cuts a multi-byte character in half) become U+FFFD, one per bad
  // byte, so the result is always valid UTF-8. A token >= kVocabSize is an error.
  std::string decode(std::span<const uint32_t> tokens) const;
};

// Length of the valid UTF-8 sequence starting at bytes[0], or 0 if it is not one
// (bad lead byte, missing/bad continuation, overlong form, surrogate, > U+10FFFF).
int utf8_sequence_length(std::span<const unsigned char> bytes);

}  // namespace infllm::data
