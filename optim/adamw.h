// AdamW over a model's named parameters, with f32 master weights (docs/architecture.md).
//
// Mixed precision: a parameter (a leaf tensor) holds the compute dtype, bf16 or f32; after
// backward its grad() is f32. Per parameter the optimizer keeps three f32 tensors on the
// parameter's device: the master weights and the moments exp_avg (m) and exp_avg_sq (v). A step
// updates the master from the grad and writes the compute copy back into the parameter in the
// same pass. An f32 parameter is its own master: no second copy exists.
//
// On a GPU a step is one multi-tensor launch (optim/adamw_kernels.h) over a small table of
// per-parameter pointers kept in device memory; the table is uploaded again only when a pointer
// changes (the autograd engine allocates fresh grads each step unless they are preallocated).
//
// Gradient clipping belongs to the caller: step(lr, grad_clip_scale(options, grad_norm())).
// The update for each element (t = steps_taken() + 1, g = grad * grad_scale):
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   p = p (1 - lr wd) - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// t counts the optimizer's steps, not each parameter's: a parameter skipped in some step (its
// grad undefined) still sees the global t afterwards.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/named_parameter.h"
#include "core/tensor.h"
#include "optim/adamw_kernels.h"
#include "optim/optimizer.h"

namespace infllm {

struct AdamWOptions {
  double lr = 3e-4;  // the peak learning rate the schedule scales; step() takes the lr to use
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  // A parameter whose name contains one of these substrings gets weight_decay 0 (norm gains
  // and embedding tables, as in most LM recipes). Matching is plain substring search on the
  // dotted name from Module::named_parameters(), e.g. "blocks.0.attn_norm.weight".
  std::vector<std::string> no_decay = {"norm", "embedding"};
  // Max global grad norm; 0 = no clipping. The caller clips: step(lr, grad_clip_scale(...)).
  double grad_clip = 1.0;
  bool operator==(const AdamWOptions&) const = default;
};

// Throws infllm::Error naming `who` and the recipe key when an option is out of range.
void check_adamw_options(const AdamWOptions& options, const char* who);
// The grad_scale that clips grads of global norm `grad_norm` to options.grad_clip: 1 when the
// norm is within it or clipping is off.
double grad_clip_scale(const AdamWOptions& options, double grad_norm);
// Parameter `name`'s weight decay: 0 when its name contains one of options.no_decay.
float adamw_weight_decay(const std::string& name, const AdamWOptions& options);

// The optimizer's state of one parameter: f32, contiguous, on the parameter's device, the same
// number of elements as the parameter. A sharded optimizer keeps the same three per shard.
struct AdamWParamState {
  std::string name;
  Tensor* param = nullptr;  // the model's slot; its storage is updated in place
  float weight_decay = 0.0f;
  Tensor master;  // the parameter itself when it is f32, else an f32 copy
  Tensor exp_avg;
  Tensor exp_avg_sq;
};

// The kernels' hyperparameters for update number `step` (1-based) at `lr`, each grad scaled by
// grad_scale; `who` names the optimizer in the error when lr or grad_scale is not usable.
AdamWHyper adamw_hyper(const AdamWOptions& options, double lr, double grad_scale, int64_t step,
                       const char* who);

class AdamW : public Optimizer {
 public:
  // Every parameter must be defined, f32 or bf16, contiguous, and all on one device; names must
  // be unique. Masters are initialized from the parameters' current values, moments to zero.
  AdamW(std::vector<NamedParameter> params, AdamWOptions options);

  // One update of every parameter whose grad is defined (others are skipped), at learning rate
  // `lr`, with each grad multiplied by grad_scale first. Grads must be f32, contiguous, shaped
  // and placed like their parameter.
  void step(double lr, double grad_scale = 1.0) override;
  int64_t steps_taken() const override { return steps_taken_; }
  void set_steps_taken(int64_t steps) override;

  // Global L2 norm over all defined grads (before any grad_scale), in double. On a GPU: one
  // multi-tensor launch and one device-to-host read of the result.
  double grad_norm() override;

  // zero_grad: fills every defined grad with zeros in place, keeping its storage (use it when
  // grads are preallocated, e.g. views into a DDP bucket: the engine accumulates into them).
  // clear_grads: sets every grad to an undefined tensor, freeing it; the next backward
  // allocates fresh ones (what Module::zero_grad does).
  void zero_grad();
  void clear_grads() override;

  // Checkpoint state: "master/<param>", "exp_avg/<param>", "exp_avg_sq/<param>" for every
  // parameter, in parameter order; f32 tensors on the optimizer's device that alias the live
  // state (copy them before the next step if they must not change). steps_taken() is separate.
  std::vector<std::pair<std::string, Tensor>> state() const override;
  // Loads all three tensors of every parameter from `state` (f32, any device, same shapes;
  // keys as state() names them; other keys are ignored unless they carry one of the three
  // prefixes for a parameter this optimizer does not have) and writes each master into its
  // parameter's compute copy.
  void load_state(const std::map<std::string, Tensor>& state) override;
  // Sets one parameter's master weights (f32, any device, the parameter's shape) and its
  // compute copy; the moments are untouched. For starting a finetune from saved weights.
  void set_master(const std::string& name, const Tensor& f32_values) override;
  size_t state_bytes() const override;

  const AdamWOptions& options() const { return options_; }
  const std::vector<AdamWParamState>& params() const { return params_; }

 private:
  AdamWParamState& find(const std::string& name, const char* where);
  // The parameters whose grad is defined, each checked against its parameter.
  std::vector<AdamWParamState*> params_with_grad(const char* where);
  void step_cpu(const AdamWHyper& hp);
  void step_cuda(const AdamWHyper& hp);
  double grad_norm_cuda();
  // Plans the launch table for the parameters with grads and uploads it if it changed; returns
  // the number of tensors in it (0: no grads at all).
  int prepare_device_table(const char* where);

  AdamWOptions options_;
  std::vector<AdamWParamState> params_;
  Device device_;
  int64_t steps_taken_ = 0;

  // The multi-tensor launch table (CUDA only): host copy for comparison, device copy in use.
  std::vector<AdamWTensor> table_;
  int64_t table_chunks_ = 0;
  Tensor device_table_;
  Tensor norm_workspace_;
  Tensor norm_result_;  // one f32 on the device
};

}  // namespace infllm
