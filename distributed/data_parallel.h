// Data-parallel training (DDP): every rank holds the whole model, trains on its own data shard,
// and averages gradients across ranks before the optimizer step, overlapping that traffic with
// the rest of backward.
//
// Gradients land directly in flat f32 bucket buffers: before backward each parameter's grad is
// set to a view of its bucket, and the autograd engine accumulates into an existing grad in
// place. A bucket's collective starts once every parameter in it has received all of its
// gradients for this backward (the per-parameter counts are learned during the first synced
// backward, which reduces every bucket at its end instead). Buckets are reduced strictly in
// bucket order, so every rank issues the same collectives in the same order.
//
// Two reductions share this machinery:
//   all_reduce      every rank ends with the averaged gradient in every parameter's grad; a
//                   plain AdamW steps on them.
//   reduce_scatter  ZeRO-1 (distributed/zero_optimizer.h): each bucket is cut into world_size
//                   equal shards and rank r receives the average of shard r only, in place at
//                   [r * shard, (r + 1) * shard) of the bucket buffer. The optimizer state of a
//                   rank covers exactly those shards. Parameters are packed without gaps inside
//                   a bucket so a bucket is one zero_shards.h flat space.
//
// Gradient accumulation: prepare_backward(false) for every micro-batch but the last of a step
// (gradients only accumulate locally), prepare_backward(true) for the last; finish_backward()
// after each backward. The caller scales each micro-batch's loss by 1 / micro_batches so the
// averaged gradient is the gradient of the mean loss over the global batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/named_parameter.h"
#include "core/tensor.h"
#include "distributed/process_group.h"
#include "distributed/zero_shards.h"

namespace infllm::distributed {

enum class GradientReduction { all_reduce, reduce_scatter };

// One bucket: a flat f32 buffer of `elements` holding the gradients of `params`.
struct BucketLayout {
  std::vector<size_t> params;   // parameter indices, descending (the order they become ready)
  std::vector<size_t> offsets;  // element offset of each parameter inside the buffer
  size_t elements = 0;          // buffer length, alignment and shard padding included
  // reduce_scatter only: the bucket's parameters (in `params` order, packed) cut into
  // world_size shards; shards.param_offsets == offsets, padded_elements() == elements.
  ZeroShardPlan shards;
};

struct GradientLayout {
  GradientReduction reduction = GradientReduction::all_reduce;
  int world_size = 1;
  std::vector<BucketLayout> buckets;
  std::vector<size_t> bucket_of;  // parameter index -> its bucket
  std::vector<size_t> offset_of;  // parameter index -> its element offset inside that bucket
};

// Buckets over f32 gradients of param_elements (registration order), each at most
// bucket_bytes unless one parameter alone is larger (plan_gradient_buckets). all_reduce aligns
// each parameter to 256 bytes; reduce_scatter packs them and pads every bucket to a multiple
// of world_size * 16 elements.
GradientLayout plan_gradient_layout(const std::vector<size_t>& param_elements, size_t bucket_bytes,
                                    GradientReduction reduction, int world_size);

// Decides, during a synced backward, when each bucket's gradients are complete. Pure host
// logic (no CUDA), driven by the engine's per-parameter "gradient accumulated" callbacks.
//
// The first synced backward only counts the callbacks per parameter (a tied weight gets two,
// a parameter unused by the loss none) and every bucket is reduced at finish(). Later synced
// backwards mark a bucket ready once each of its parameters reached its learned count, and
// release ready buckets in bucket order. A parameter that receives another gradient after its
// bucket was released means the graph changed between steps: that is an error (its gradient
// would race with the collective). A backward with fewer callbacks than learned is correct
// (those buckets are released at finish) and teaches the new counts.
class BucketReadiness {
 public:
  BucketReadiness(const GradientLayout& layout, std::vector<std::string> param_names);

  void begin();  // a synced backward starts
  // A gradient was accumulated into `param`: returns the buckets to reduce now, in order.
  std::vector<size_t> grad_accumulated(size_t param);
  // The synced backward ended: returns the buckets not yet released, in order.
  std::vector<size_t> finish();
  // Forget the learned counts: the next synced backward learns again (after the model's graph
  // changed on purpose, e.g. another attention schedule).
  void forget() { learned_ = false; }

  bool learned() const { return learned_; }
  // Buckets released by grad_accumulated (overlapped with backward) in the last synced backward.
  size_t released_during_backward() const { return released_during_backward_; }

 private:
  std::vector<size_t> release_ready();

  std::vector<std::vector<size_t>> bucket_params_;
  std::vector<size_t> bucket_of_;
  std::vector<std::string> names_;
  std::vector<size_t> expected_;  // learned callbacks per parameter
  std::vector<size_t> seen_;      // callbacks in the current backward
  std::vector<size_t> missing_;   // per bucket: parameters still short of their count
  size_t next_release_ = 0;
  size_t released_during_backward_ = 0;
  bool learned_ = false;
};

// Defined in data_parallel_nccl.cpp. A CPU-only build can make no ProcessGroup (its constructor
// throws), so it links the stubs of distributed/no_cuda.cpp instead.
class DataParallel {
 public:
  // params: the model's parameters in registration order, all on pg.device(), all requiring
  // grad. Allocates one flat f32 gradient buffer per bucket and installs the gradient hooks.
  DataParallel(ProcessGroup& pg, std::vector<NamedParameter> params, size_t bucket_bytes,
               GradientReduction reduction = GradientReduction::all_reduce);
  ~DataParallel();  // removes the hooks and the grad views
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Rank 0's values of every parameter (any dtype) overwrite the others'. Collective; call it
  // before building the optimizer (it copies the parameters into its master weights).
  void broadcast_parameters();
  // Collective check that every rank holds bitwise the same parameters (a hash of each rank's
  // bytes, all-gathered). Copies the model to the host: for tests and debugging.
  bool parameters_identical();

  // Before each micro-batch's backward. The first micro-batch of an optimizer step zeroes the
  // buckets; every call points each parameter's grad at its bucket view. sync = true on the
  // last micro-batch: that backward reduces the buckets, overlapped with backward.
  void prepare_backward(bool sync);
  // After each micro-batch's backward. On a synced one: reduces the buckets not yet started and
  // makes the compute stream wait for all of them, so the optimizer sees averaged gradients.
  // With reduce_scatter only this rank's shard of each bucket is averaged; the rest of the grad
  // views keep this rank's local gradients (ZeroAdamW reads only the shard).
  void finish_backward();
  // Milliseconds from the end of the last synced backward until its last collective finished
  // (0 when communication was fully hidden). Waits for the collectives.
  double last_exposed_ms();
  // Buckets whose collective started during the last synced backward (the rest at its end).
  size_t buckets_overlapped() const { return readiness_.released_during_backward(); }
  // The next synced backward learns the per-parameter gradient counts again.
  void relearn_gradient_counts() { readiness_.forget(); }

  // Fills every bucket with zeros (the grads keep pointing into them).
  void zero_grad();

  ProcessGroup& process_group() const { return pg_; }
  const std::vector<NamedParameter>& params() const { return params_; }
  const GradientLayout& layout() const { return layout_; }
  // Bucket b's flat f32 gradient buffer [layout().buckets[b].elements].
  const Tensor& bucket_buffer(size_t b) const { return buffers_.at(b); }

 private:
  void grad_accumulated(size_t param);
  void reduce_bucket(size_t b);
  void comm_waits_for_compute();
  void compute_waits_for_comm();

  ProcessGroup& pg_;
  std::vector<NamedParameter> params_;
  GradientLayout layout_;
  BucketReadiness readiness_;
  std::vector<Tensor> buffers_;
  std::vector<Tensor> grad_views_;  // per parameter: its slice of a bucket, shaped like it
  Device device_;
  // The compute stream and the events ordering it against the communication stream: CUDA
  // types, defined in data_parallel_nccl.cpp.
  struct Streams;
  std::unique_ptr<Streams> streams_;
  bool armed_ = false;      // inside a synced backward
  bool step_open_ = false;  // a micro-batch of this step already ran
  bool timed_ = false;      // the timing events hold a finished synced backward
};

}  // namespace infllm::distributed
