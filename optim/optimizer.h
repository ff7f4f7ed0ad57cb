// What the trainer needs from an optimizer, so that one training loop drives the plain AdamW
// (one process, or data parallel with all-reduced gradients) and the ZeRO-1 sharded AdamW
// (distributed/zero_optimizer.h) alike. In a sharded optimizer the methods marked collective
// must be called by every rank in the same order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace infllm {

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // One update at learning rate `lr`, each gradient multiplied by grad_scale (clipping).
  // Collective when sharded.
  virtual void step(double lr, double grad_scale = 1.0) = 0;
  virtual int64_t steps_taken() const = 0;
  virtual void set_steps_taken(int64_t steps) = 0;
  // Global L2 norm of the gradients, before any grad_scale. Collective when sharded.
  virtual double grad_norm() = 0;
  // Drops this step's gradients (the next backward starts from zero).
  virtual void clear_grads() = 0;
  // Checkpoint state, unsharded: "master/<param>", "exp_avg/<param>", "exp_avg_sq/<param>", f32,
  // in parameter order. Collective when sharded.
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;
  virtual void load_state(const std::map<std::string, Tensor>& state) = 0;
  // One parameter's master weights (f32, its shape) and compute copy; moments untouched.
  virtual void set_master(const std::string& name, const Tensor& f32_values) = 0;
  // Bytes of f32 optimizer state (masters that are not the parameters themselves, moments)
  // this process holds.
  virtual size_t state_bytes() const = 0;
};

}  // namespace infllm
