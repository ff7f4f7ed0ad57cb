// The whole-file check a run does before its first step: a token file that would fail at the
// first evaluation, or halfway through an epoch, fails at start instead.
#pragma once

#include <cstdint>
#include <string>

namespace infllm::data {

struct TokenFileNeeds {
  std::string key;         // the recipe key naming the file ("data.train"): starts every message
  int64_t min_tokens = 2;  // the tokens one window needs
  std::string min_tokens_fix = "lower data.seq_len or use a larger file";
  int64_t vocab_limit = 0;  // model.vocab_size: every token must be below it
};

struct TokenFileFacts {
  int64_t tokens = 0;
  int64_t documents = 0;
  int64_t vocab_size = 0;   // the file's attribute
  int64_t max_token = -1;   // the largest token of the part read; -1 when it read none
  int64_t tokens_read = 0;  // of this part
};

// Opens `path` (layout, attributes, every document offset: TokenFile's checks), checks the
// file's vocab_size and length against `needs`, then reads part `part` of `parts` of /tokens
// (chunks of 1M tokens dealt round-robin, so ranks can share the reading) and checks every
// token against both vocabularies; a damaged or truncated file fails in that read. Any problem
// is an infllm::Error starting with `needs.key` and the path.
TokenFileFacts check_token_file(const std::string& path, const TokenFileNeeds& needs, int part = 0,
                                int parts = 1);

}  // namespace infllm::data
