// The tokenizer `infllm generate` reads its prompt with and writes text with: the byte
// tokenizer, or the Hugging Face tokenizer a checkpoint speaks (train/tokenizer_files.h).
// Encoding text with a Hugging Face tokenizer stays in Python (its `tokenizers` library): a
// prompt for such a model is given as ids (--prompt-ids), e.g.
//   python3 -c "from tokenizers import Tokenizer as T; print(*T.from_file('tokenizer.json')
//               .encode('Once upon a time').ids, sep=',')"
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "data/hf_tokenizer.h"
#include "train/load_model.h"

namespace infllm::train {

class TextTokenizer {
 public:
  // `spec`: "byte", a folder with tokenizer.json, or empty for the checkpoint's own tokenizer
  // (an infllm::Error saying why and how to name it when that is unknown).
  TextTokenizer(const LoadedModel& loaded, const std::string& spec);

  // The ids generation continues: `ids` ("1,2,3", --prompt-ids) exactly as given when not
  // empty; otherwise BOS (if the tokenizer has one) and `text` - which only the byte tokenizer
  // encodes: with a Hugging Face tokenizer, text is an error pointing to --prompt-ids. Every id
  // must be below the model's vocab_size.
  std::vector<int32_t> prompt(const std::string& text, const std::string& ids) const;
  // The text of a whole sequence (the prompt's echo), specials dropped.
  std::string decode(std::span<const int32_t> ids) const;
  // The bytes one generated token adds to the text (a character may span several tokens).
  std::string token_bytes(int32_t id) const;
  // Whether `id` ends generation (an EOS id of the tokenizer).
  bool stops(int32_t id) const;
  const std::string& id() const { return id_; }

 private:
  std::optional<data::HfTokenizer> hf_;  // empty: the byte tokenizer
  std::string id_;
  std::vector<int64_t> bos_, eos_;
  int64_t vocab_size_ = 0;  // the model's
};

}  // namespace infllm::train
