#include "attention/attention_policy.h"

#include "core/error.h"

namespace infllm::attention {

std::span<const EnumName<AttentionMode>> enum_names(AttentionMode) {
  static constexpr EnumName<AttentionMode> names[] = {{AttentionMode::dense, "dense"},
                                                      {AttentionMode::sparse, "sparse"},
                                                      {AttentionMode::automatic, "auto"}};
  return names;
}

std::string_view to_string(AttentionMode mode) {
  return enum_to_string(mode);
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
