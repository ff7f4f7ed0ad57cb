// SHA-256 (FIPS 180-4), for naming a tokenizer by its file's content: `sha256sum tokenizer.json`
// and Python's hashlib give the same digest, so the name can be checked by hand.
#pragma once

#include <string>
#include <string_view>

namespace infllm::data {

// The digest of `bytes` as 64 lowercase hex digits.
std::string sha256_hex(std::string_view bytes);

}  // namespace infllm::data
