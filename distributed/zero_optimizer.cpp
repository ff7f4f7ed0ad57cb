#include "distributed/zero_optimizer.h"

#include "core/error.h"
#include "optim/adamw.h"

namespace infllm::distributed {

ZeroStatePlan plan_zero_state(const GradientLayout& layout, int rank) {
  INFLLM_CHECK(layout.reduction == GradientReduction::reduce_scatter,
               "plan_zero_state: the gradient layout all-reduces; ZeRO needs ",
               "GradientReduction::reduce_scatter");
  INFLLM_CHECK(rank >= 0 && rank < layout.world_size, "plan_zero_state: rank ", rank,
               " is outside [0, ", layout.world_size, ")");
  ZeroStatePlan plan;
  for (size_t b = 0; b < layout.buckets.size(); ++b) {
    const BucketLayout& bucket = layout.buckets[b];
    const size_t shard_begin = bucket.shards.shard_begin(rank);
    plan.bucket_offsets.push_back(plan.elements);
    for (const ShardPiece& piece : shard_pieces(bucket.shards, rank)) {
      ZeroPiece out;
      out.param = bucket.params[piece.param];
      out.bucket = b;
      out.begin = piece.begin;
      out.end = piece.end;
      out.bucket_offset = shard_begin + piece.shard_offset;
      out.state_offset = plan.elements + piece.shard_offset;
      plan.pieces.push_back(out);
    }
    plan.elements += bucket.shards.shard_elements;
  }
  return plan;
}

}  // namespace infllm::distributed
