// ZeRO-1 sharding: the flat concatenation of all parameters (in registration order) is cut
// into world_size contiguous shards of one padded size. Rank r owns flat elements
// [r*shard_elements, (r+1)*shard_elements): it receives that range of the gradients by
// reduce-scatter, runs AdamW on it (its moments are shard-sized), and all-gathers the updated
// weights. Checkpoints keep the full per-parameter layout; shard <-> parameters is a pure index
// map, so gathering every rank's shard rebuilds each full parameter exactly.
#pragma once

#include <cstddef>
#include <vector>

namespace infllm::distributed {

// One contiguous piece of one parameter inside one rank's shard.
struct ShardPiece {
  size_t param = 0;  // parameter index
  size_t begin = 0;  // element range [begin, end) inside that parameter
  size_t end = 0;
  size_t shard_offset = 0;  // where the piece starts inside the rank's shard
};

struct ZeroShardPlan {
  int world_size = 1;
  size_t alignment = 16;               // shard_elements is a multiple of it
  size_t total_elements = 0;           // sum of all parameter element counts
  size_t shard_elements = 0;           // every rank's shard size (NCCL needs them equal)
  std::vector<size_t> param_elements;  // as given
  std::vector<size_t> param_offsets;   // start of each parameter in the flat buffer

  // world_size * shard_elements: the flat buffer length; the tail past total_elements is
  // padding (kept zero) owned by the last rank(s).
  size_t padded_elements() const { return shard_elements * static_cast<size_t>(world_size); }
  size_t shard_begin(int rank) const { return shard_elements * static_cast<size_t>(rank); }
};

ZeroShardPlan plan_zero_shards(const std::vector<size_t>& param_elements, int world_size,
                               size_t alignment = 16);

// The pieces of parameters that `rank` owns, in flat order.
std::vector<ShardPiece> shard_pieces(const ZeroShardPlan& plan, int rank);

// Host copies between the full per-parameter layout and one rank's shard (shard_elements long;
// padding is zero-filled). Gathering every rank's shard back into the parameters inverts
// scattering them. Used for checkpoints of sharded optimizer state.
template <class T>
void copy_params_to_shard(const ZeroShardPlan& plan, int rank, const std::vector<const T*>& params,
                          T* shard) {
  for (size_t i = 0; i < plan.shard_elements; ++i) shard[i] = T{};
  for (const ShardPiece& piece : shard_pieces(plan, rank))
    for (size_t e = piece.begin; e < piece.end; ++e)
      shard[piece.shard_offset + (e - piece.begin)] = params[piece.param][e];
}

template <class T>
void copy_shard_to_params(const ZeroShardPlan& plan, int rank, const T* shard,
                          const std::vector<T*>& params) {
  for (const ShardPiece& piece : shard_pieces(plan, rank))
    for (size_t e = piece.begin; e < piece.end; ++e)
      params[piece.param][e] = shard[piece.shard_offset + (e - piece.begin)];
}

}  // namespace infllm::distributed
