// The dense/sparse switch: one set of weights, two schedules. Short sequences use dense causal
// attention; long ones the InfLLM-V2 block-sparse path.
#pragma once

#include <span>
#include <string_view>

#include "core/enum_names.h"

namespace infllm::attention {

enum class AttentionMode {
  dense,      // always dense causal attention
  sparse,     // always InfLLM-V2 block selection + block-sparse attention
  automatic,  // sparse exactly when T > dense_len (recipe value "auto")
};

// "dense", "sparse", "auto": the names the recipe (attention.mode), `infllm eval --attention`
// and the logs use. Parse with from_string<AttentionMode>(text, what) (core/enum_names.h).
std::span<const EnumName<AttentionMode>> enum_names(AttentionMode);
std::string_view to_string(AttentionMode mode);

// True when a sequence of T tokens takes the sparse path.
bool use_sparse(AttentionMode mode, int T, int dense_len);

}  // namespace infllm::attention
