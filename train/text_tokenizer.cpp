#include "train/text_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "data/byte_tokenizer.h"
#include "train/tokenizer_files.h"

namespace infllm::train {

TextTokenizer::TextTokenizer(const LoadedModel& loaded, const std::string& spec)
    : vocab_size_(loaded.recipe.model.vocab_size) {
  ModelTokenizer tokenizer;
  if (!spec.empty()) {
    tokenizer = named_tokenizer(spec);
  } else {
    TokenizerLookup lookup = checkpoint_tokenizer(loaded.path, loaded.strings);
    INFLLM_CHECK(lookup.tokenizer.has_value(), "which tokenizer? ", lookup.unknown);
    tokenizer = std::move(*lookup.tokenizer);
  }
  id_ = tokenizer.id;
  bos_ = token_id_list(tokenizer.ids.bos);
  eos_ = token_id_list(tokenizer.ids.eos);
  if (!tokenizer.is_byte())
    hf_.emplace(data::HfTokenizer::from_file(
        (std::filesystem::path(tokenizer.dir) / "tokenizer.json").string()));
}

std::vector<int32_t> TextTokenizer::prompt(const std::string& text, const std::string& ids) const {
  std::vector<int32_t> tokens;
  if (!ids.empty()) {
    std::stringstream in(ids);
    std::string item;
    while (std::getline(in, item, ',')) {
      char* end = nullptr;
      const long long value = std::strtoll(item.c_str(), &end, 10);
      INFLLM_CHECK(!item.empty() && *end == '\0' && value >= 0 && value < vocab_size_,
                   "--prompt-ids: '", item, "' is not a token id in [0, ", vocab_size_, ")");
      tokens.push_back(int32_t(value));
    }
    INFLLM_CHECK(text.empty(), "give --prompt or --prompt-ids, not both");
    return tokens;
  }
  INFLLM_CHECK(!hf_ || text.empty(), "--prompt TEXT needs the byte tokenizer; this ",
               "model speaks ", id_,
               ": encode the prompt with its tokenizer.json and pass the ids with --prompt-ids, "
               "e.g. python3 -c \"from tokenizers import Tokenizer as T; "
               "print(*T.from_file('tokenizer.json').encode('TEXT').ids, sep=',')\"");
  INFLLM_CHECK(!bos_.empty() || !text.empty() || !hf_, id_,
               " has no BOS token to start from; give the prompt with --prompt-ids");
  if (!bos_.empty()) tokens.push_back(int32_t(bos_[0]));
  for (const uint32_t byte : data::ByteTokenizer().encode(text)) tokens.push_back(int32_t(byte));
  return tokens;
}

std::string TextTokenizer::decode(std::span<const int32_t> ids) const {
  const std::vector<uint32_t> unsigned_ids(ids.begin(), ids.end());
  if (hf_) return hf_->decode(unsigned_ids);
  std::vector<uint32_t> in_vocabulary;  // a byte model's padded rows have no text
  for (const uint32_t id : unsigned_ids)
    if (id < data::ByteTokenizer::kVocabSize) in_vocabulary.push_back(id);
  return data::ByteTokenizer().decode(in_vocabulary);
}

std::string TextTokenizer::token_bytes(int32_t id) const {
  if (hf_) return hf_->token_bytes(uint32_t(id));
  return id >= 0 && id < 256 ? std::string(1, char(id)) : std::string();
}

bool TextTokenizer::stops(int32_t id) const {
  return std::find(eos_.begin(), eos_.end(), int64_t(id)) != eos_.end();
}

}  // namespace infllm::train
