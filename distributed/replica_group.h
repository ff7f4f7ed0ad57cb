// The collective side of a data-parallel training run, as train/replicas uses it: one NCCL group
// over the ranks, the gradient averaging attached to the model's parameters (DataParallel), and
// the optimizer over them (AdamW, or ZeroAdamW with state sharded across ranks).
//
// join_replica_group is the only way in. A CPU-only build has no NCCL: its
// distributed/no_cuda.cpp defines join_replica_group as an error, so callers need no #if.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "core/device.h"
#include "core/named_parameter.h"
#include "distributed/launch_env.h"
#include "distributed/process_group.h"
#include "optim/adamw.h"
#include "optim/optimizer.h"

namespace infllm::distributed {

class ReplicaGroup {
 public:
  virtual ~ReplicaGroup() = default;

  // This rank's GPU.
  virtual Device device() const = 0;

  // Gives every rank rank 0's weights, attaches the gradient averaging (reduce-scatter when
  // `zero`, else all-reduce, in buckets of bucket_bytes) to `params` and builds the optimizer
  // over them. Collective. The optimizer owns the attachment: destroy it before the model.
  virtual std::unique_ptr<Optimizer> make_optimizer(std::vector<NamedParameter> params,
                                                    const AdamWOptions& options, bool zero,
                                                    size_t bucket_bytes) = 0;

  // Around each micro-batch's backward (no-ops before make_optimizer); last = the step's final
  // micro-batch, whose backward averages the gradients across ranks.
  virtual void before_backward(bool last) = 0;
  virtual void after_backward() = 0;

  // The element-wise mean of `values` over the ranks. Collective; a host round trip.
  virtual std::vector<double> mean(std::vector<double> values) = 0;
  // Milliseconds of gradient communication the last step did not hide behind backward.
  virtual double exposed_communication_ms() = 0;
};

// Joins the run's NCCL group through options.rendezvous. Collective.
std::unique_ptr<ReplicaGroup> join_replica_group(const LaunchEnv& env,
                                                 const ProcessGroupOptions& options);

}  // namespace infllm::distributed
