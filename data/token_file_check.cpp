#include "data/token_file_check.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "data/token_file.h"

namespace infllm::data {

TokenFileFacts check_token_file(const std::string& path, const TokenFileNeeds& needs, int part,
                                int parts) {
  INFLLM_CHECK(parts >= 1 && part >= 0 && part < parts, "check_token_file: part ", part,
               " is outside [0, ", parts, ")");
  constexpr int64_t kChunk = int64_t{1} << 20;
  TokenFileFacts facts;
  try {
    const TokenFile file(path);
    facts.tokens = file.num_tokens();
    facts.documents = file.num_documents();
    facts.vocab_size = file.vocab_size();
    INFLLM_CHECK(file.vocab_size() <= needs.vocab_limit, "token file '", path, "' has vocab_size ",
                 file.vocab_size(), " but model.vocab_size is ", needs.vocab_limit,
                 "; set model.vocab_size to at least ", file.vocab_size(),
                 " or use a file written with the model's tokenizer");
    INFLLM_CHECK(file.num_tokens() >= needs.min_tokens, "token file '", path, "' holds ",
                 file.num_tokens(), " tokens, fewer than the ", needs.min_tokens,
                 " one window needs; ", needs.min_tokens_fix);
    // TokenFile::read refuses tokens at or above the file's vocab_size, which is at most
    // model.vocab_size (checked above): every token read is a valid embedding row.
    std::vector<uint32_t> chunk;
    for (int64_t first = int64_t(part) * kChunk; first < file.num_tokens();
         first += int64_t(parts) * kChunk) {
      const int64_t count = std::min(kChunk, file.num_tokens() - first);
      chunk.resize(size_t(count));
      file.read(first, first + count, chunk.data());
      facts.max_token = std::max<int64_t>(facts.max_token,
                                          int64_t(*std::max_element(chunk.begin(), chunk.end())));
      facts.tokens_read += count;
    }
  } catch (const Error& error) {
    fail(needs.key, ": ", error.what());
  }
  return facts;
}

}  // namespace infllm::data
