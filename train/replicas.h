// The data-parallel side of a run (docs/distributed.md). Every rank trains a full copy of the
// model on its own shard of the data; gradients are averaged across ranks during backward
// (DataParallel), and the optimizer is AdamW or, with distributed.zero = 1, ZeRO-1's sharded
// AdamW. With a single process (no launcher variables) nothing is shared and every method
// below is the identity or does nothing, so one training loop serves both.
#pragma once

#include <memory>
#include <vector>

#include "distributed/launch_env.h"
#include "distributed/replica_group.h"
#include "layers/transformer.h"
#include "optim/adamw.h"
#include "train/recipe.h"

namespace infllm::train {

class Replicas {
 public:
  // Reads the launcher's variables; with several ranks joins the NCCL group through the
  // recipe's distributed.init rendezvous. Collective.
  explicit Replicas(const Recipe& recipe);
  ~Replicas();
  Replicas(const Replicas&) = delete;
  Replicas& operator=(const Replicas&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  bool distributed() const { return env_.world_size > 1; }
  // Rank 0 writes logs and checkpoints; the other ranks only train.
  bool writer() const { return env_.rank == 0; }
  Device device() const { return device_; }
  const char* optimizer_name() const;

  // Gives every rank rank 0's weights, attaches the gradient averaging to the model's
  // parameters and builds the recipe's optimizer over them. Collective. The optimizer owns the
  // attachment: destroy it before the model, and use before/after_backward only while it lives.
  std::unique_ptr<Optimizer> make_optimizer(TransformerLM& model, const AdamWOptions& options);

  // Around each micro-batch's backward; last = the step's final micro-batch, whose backward
  // averages the gradients across ranks.
  void before_backward(bool last);
  void after_backward();

  // The element-wise mean of `values` over the ranks. Collective; a host round trip.
  std::vector<double> mean(std::vector<double> values);
  // Milliseconds of gradient communication the last step did not hide behind backward.
  double exposed_communication_ms();

 private:
  distributed::LaunchEnv env_;
  Device device_;
  int zero_ = 0;
  size_t bucket_bytes_ = 0;
  std::unique_ptr<distributed::ReplicaGroup> group_;  // null with one process
};

}  // namespace infllm::train
