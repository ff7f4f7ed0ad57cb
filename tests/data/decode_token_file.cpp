// decode_token_file TOKENIZER_JSON TOKEN_FILE: the C++ side of tests/data/check_prepare_hf.py.
// Opens TOKEN_FILE with the validating reader (data/token_file.h), decodes every document with
// data::HfTokenizer and prints one JSON object: the tokenizer's id, the file's attributes, and
// per document its token ids, decoded text, and the concatenated token_bytes of its ids
// (what `infllm generate` prints token by token). Exit 1 with the message on any infllm::Error.
#include <cstdio>
#include <string>

#include "core/error.h"
#include "data/hf_tokenizer.h"
#include "data/json.h"
#include "data/token_file.h"

using infllm::data::json_quote;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fputs("usage: decode_token_file TOKENIZER_JSON TOKEN_FILE\n", stderr);
    return 2;
  }
  try {
    const infllm::data::HfTokenizer tokenizer = infllm::data::HfTokenizer::from_file(argv[1]);
    const infllm::data::TokenFile file(argv[2]);
    const std::vector<int64_t> offsets = file.doc_offsets();
    std::string out = "{\"tokenizer_id\": " + json_quote(tokenizer.id()) +
                      ", \"tokenizer_vocab_size\": " + std::to_string(tokenizer.vocab_size()) +
                      ", \"file_tokenizer\": " + json_quote(file.attributes().tokenizer) +
                      ", \"file_vocab_size\": " + std::to_string(file.vocab_size()) +
                      ", \"documents\": [";
    for (size_t d = 0; d < offsets.size(); ++d) {
      const int64_t end = d + 1 < offsets.size() ? offsets[d + 1] : file.num_tokens();
      const std::vector<uint32_t> ids = file.read(offsets[d], end);
      std::string streamed;
      for (const uint32_t id : ids) streamed += tokenizer.token_bytes(id);
      out += std::string(d ? ", " : "") + "{\"ids\": [";
      for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
      out += "], \"text\": " + json_quote(tokenizer.decode(ids)) +
             ", \"streamed\": " + json_quote(streamed) + "}";
    }
    std::puts((out + "]}").c_str());
  } catch (const infllm::Error& error) {
    std::fprintf(stderr, "decode_token_file: %s\n", error.what());
    return 1;
  }
  return 0;
}
