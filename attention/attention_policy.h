// The dense/sparse switch: one set of weights, two schedules. Short sequences use dense causal
// attention; long ones the InfLLM-V2 block-sparse path.
#pragma once

#include <string>
#include <string_view>

namespace infllm::attention {

enum class AttentionMode {
  dense,      // always dense causal attention
  sparse,     // always InfLLM-V2 block selection + block-sparse attention
  automatic,  // sparse exactly when T > dense_len (recipe value "auto")
};

// Parses a recipe value ("dense", "sparse", "auto"); `where` names the key and file in the error.
AttentionMode parse_attention_mode(std::string_view text, std::string_view where);
std::string to_string(AttentionMode mode);

// True when a sequence of T tokens takes the sparse path.
bool use_sparse(AttentionMode mode, int T, int dense_len);

}  // namespace infllm::attention
