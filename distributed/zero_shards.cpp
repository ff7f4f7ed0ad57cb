#include "distributed/zero_shards.h"

#include <algorithm>

#include "core/error.h"

namespace infllm::distributed {

ZeroShardPlan plan_zero_shards(const std::vector<size_t>& param_elements, int world_size,
                               size_t alignment) {
  INFLLM_CHECK(world_size >= 1, "plan_zero_shards: world size ", world_size, " must be >= 1");
  INFLLM_CHECK(alignment >= 1, "plan_zero_shards: alignment must be >= 1");
  ZeroShardPlan plan;
  plan.world_size = world_size;
  plan.alignment = alignment;
  plan.param_elements = param_elements;
  for (size_t count : param_elements) {
    plan.param_offsets.push_back(plan.total_elements);
    plan.total_elements += count;
  }
  size_t even = (plan.total_elements + world_size - 1) / world_size;
  plan.shard_elements = (even + alignment - 1) / alignment * alignment;
  return plan;
}

std::vector<ShardPiece> shard_pieces(const ZeroShardPlan& plan, int rank) {
  INFLLM_CHECK(rank >= 0 && rank < plan.world_size, "shard_pieces: rank ", rank, " is outside [0, ",
               plan.world_size, ")");
  size_t shard_begin = plan.shard_begin(rank);
  size_t shard_end = std::min(shard_begin + plan.shard_elements, plan.total_elements);
  std::vector<ShardPiece> pieces;
  // First parameter whose range ends after shard_begin (offsets ascend).
  auto first = std::upper_bound(plan.param_offsets.begin(), plan.param_offsets.end(), shard_begin);
  size_t p = first == plan.param_offsets.begin() ? 0 : (first - plan.param_offsets.begin()) - 1;
  for (; p < plan.param_elements.size(); ++p) {
    size_t param_begin = plan.param_offsets[p];
    size_t param_end = param_begin + plan.param_elements[p];
    if (param_begin >= shard_end) break;
    size_t lo = std::max(param_begin, shard_begin);
    size_t hi = std::min(param_end, shard_end);
    if (lo >= hi) continue;  // empty parameter, or one that ends before this shard
    pieces.push_back({p, lo - param_begin, hi - param_begin, lo - shard_begin});
  }
  return pieces;
}

}  // namespace infllm::distributed
