#include "attention/attention_policy.h"

#include "core/error.h"

namespace infllm::attention {

AttentionMode parse_attention_mode(std::string_view text, std::string_view where) {
  if (text == "dense") return AttentionMode::dense;
  if (text == "sparse") return AttentionMode::sparse;
  if (text == "auto") return AttentionMode::automatic;
  fail(where, ": attention mode '", text, "' is not one of dense, sparse, auto");
}

std::string to_string(AttentionMode mode) {
  switch (mode) {
    case AttentionMode::dense:
      return "dense";
    case AttentionMode::sparse:
      return "sparse";
    case AttentionMode::automatic:
      return "auto";
  }
  fail("to_string: invalid AttentionMode value ", int(mode));
}

bool use_sparse(AttentionMode mode, int T, int dense_len) {
  INFLLM_CHECK(T > 0 && dense_len >= 0, "use_sparse: T=", T,
               " must be positive and dense_len=", dense_len, " non-negative");
  switch (mode) {
    case AttentionMode::dense:
      return false;
    case AttentionMode::sparse:
      return true;
    case AttentionMode::automatic:
      return T > dense_len;
  }
  fail("use_sparse: invalid AttentionMode value ", int(mode));
}

}  // namespace infllm::attention
