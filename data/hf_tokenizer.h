// Hugging Face tokenizer.json, read for decoding: token ids -> UTF-8 text by table lookup (no
// BPE: encoding text stays with Hugging Face's `tokenizers` library, scripts/prepare-hf).
//
// Supported (docs/interop.md, "Tokenizers"): model.type BPE, with a decoder made of
//   ByteLevel                      byte-level BPE: GPT-2, Llama-3, Qwen (each character of a
//                                  token stands for one byte, GPT-2's bytes_to_unicode table)
//   Replace, ByteFallback, Fuse,   SentencePiece-style BPE: Llama-2, Mistral ("▁" is a space,
//   Strip, Metaspace               "<0xNN>" a raw byte)
// alone or in a Sequence. Other models (WordPiece, Unigram, WordLevel) and decoders are an
// infllm::Error naming the file and the field.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace infllm::data {

// The `tokenizer` attribute of token files written with a tokenizer.json (scripts/prepare-hf):
// "hf-tokenizer:" and the first 16 hex digits of the file's SHA-256 (`sha256sum tokenizer.json`).
inline constexpr std::string_view kHfTokenizerPrefix = "hf-tokenizer:";
std::string hf_tokenizer_id(std::string_view tokenizer_json);

class HfTokenizer {
 public:
  // tokenizer.json's text; `source` names it in errors.
  HfTokenizer(const std::string& tokenizer_json, const std::string& source);
  static HfTokenizer from_file(const std::string& path);

  const std::string& id() const { return id_; }                   // hf_tokenizer_id of the file
  int64_t vocab_size() const { return int64_t(tokens_.size()); }  // the largest id + 1
  // The id of a vocabulary entry or added token, by its text as tokenizer.json spells it.
  std::optional<uint32_t> token_id(std::string_view token) const;
  bool is_special(uint32_t id) const { return id < special_.size() && special_[id]; }

  // What `tokenizers`' decode(ids, skip_special_tokens=True) returns: special tokens and ids
  // without an entry are skipped, the decoder steps applied in order (a SentencePiece decoder
  // drops the first token's leading space). Byte sequences that are not UTF-8 become U+FFFD.
  std::string decode(std::span<const uint32_t> ids) const;
  // The bytes one token adds in the middle of a text (no start-of-text rule; "<0xNN>" is the
  // raw byte, so a character split over several tokens is whole once they are concatenated):
  // for printing generated tokens as they come. Special tokens and unknown ids give "".
  std::string token_bytes(uint32_t id) const;

 private:
  struct Step {
    std::string type;             // ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace
    std::string from, to;         // Replace: pattern and content; Metaspace: replacement, " "
    int64_t start = 0, stop = 0;  // Strip: characters `from` removed at each end
    bool strip_first = false;     // Metaspace: the first token loses its replacement chars
  };
  std::vector<std::string> apply(const Step& step, std::vector<std::string> tokens) const;

  std::string id_;
  std::vector<std::string> tokens_;  // by id, as tokenizer.json spells them
  std::vector<bool> present_;        // whether an id has an entry
  std::vector<bool> special_;
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<Step> steps_;
};

// Our byte tokenizer (data/byte_tokenizer.h) as Hugging Face files that AutoTokenizer loads:
// tokenizer.json maps every text to exactly our ids (a ByteLevel pre-tokenizer and a BPE model
// of the 256 byte characters, id = byte value, no merges; BOS 256 and EOS 257 as special
// tokens, prepended/appended by nobody but a post-processor adding BOS like `generate` does).
inline constexpr std::string_view kByteBosToken = "<|begin_of_document|>";
inline constexpr std::string_view kByteEosToken = "<|end_of_document|>";
std::string byte_tokenizer_json();
// tokenizer_config.json: PreTrainedTokenizerFast, the BOS/EOS names, split_special_tokens
// (text that spells a special token's name is bytes, as in `infllm prepare`), no clean-up.
std::string byte_tokenizer_config_json();
std::string byte_special_tokens_map_json();

}  // namespace infllm::data
