// ZeRO-1: AdamW whose f32 master weights and moments are sharded across the ranks of a
// data-parallel run, so the optimizer memory of each GPU drops by about world_size.
//
// The shards come from DataParallel in GradientReduction::reduce_scatter mode: each gradient
// bucket is one flat space cut into world_size equal shards (distributed/zero_shards.h), and
// after finish_backward() rank r holds the averaged gradient of shard r of every bucket, in
// place in the bucket buffer. This rank's optimizer state is the concatenation of its shards
// of all buckets. A step:
//   1. AdamW on the shard: one multi-tensor launch (optim/adamw_kernels.h) with one entry per
//      piece of a parameter inside the shard (shard_pieces), so each piece gets its
//      parameter's weight decay; the updated compute-dtype values go straight into this
//      rank's slice of a per-bucket weight buffer;
//   2. all-gather each bucket's weight buffer in place (every rank's updated slice);
//   3. copy each parameter's range of the gathered buffer into the parameter.
// Checkpoints keep AdamW's unsharded layout ("master/<p>", "exp_avg/<p>", "exp_avg_sq/<p>"
// full tensors): state() all-gathers, load_state() takes this rank's pieces, so a checkpoint
// loads with any number of ranks and into a plain AdamW.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "distributed/data_parallel.h"
#include "optim/adamw.h"

namespace infllm::distributed {

// One contiguous piece of one parameter inside a rank's optimizer state.
struct ZeroPiece {
  size_t param = 0;   // parameter index (registration order)
  size_t bucket = 0;  // its gradient bucket
  size_t begin = 0;   // element range [begin, end) inside the parameter
  size_t end = 0;
  size_t bucket_offset = 0;  // where the piece starts inside the bucket's flat buffers
  size_t state_offset = 0;   // where it starts inside the rank's flat optimizer state
};

struct ZeroStatePlan {
  std::vector<ZeroPiece> pieces;       // bucket by bucket, flat order inside each
  std::vector<size_t> bucket_offsets;  // start of each bucket's shard in the optimizer state
  size_t elements = 0;                 // the rank's optimizer state length (padding included)
};

// This rank's pieces of a reduce_scatter layout (plan_gradient_layout).
ZeroStatePlan plan_zero_state(const GradientLayout& layout, int rank);

// Defined in zero_optimizer_nccl.cpp; a CPU-only build, which can make no DataParallel, links
// the stubs of distributed/no_cuda.cpp instead.
class ZeroAdamW : public Optimizer {
 public:
  // ddp must use GradientReduction::reduce_scatter and outlives this optimizer. Parameters must
  // be identical on all ranks already (DataParallel::broadcast_parameters) and share one dtype,
  // f32 or bf16. Masters start from the parameters, moments at zero.
  ZeroAdamW(DataParallel& ddp, AdamWOptions options);
  ~ZeroAdamW();
  ZeroAdamW(const ZeroAdamW&) = delete;
  ZeroAdamW& operator=(const ZeroAdamW&) = delete;

  // Collective. Updates every parameter from the averaged gradients of the last synced
  // backward, AdamW's update with each grad multiplied by grad_scale. Unlike AdamW, no
  // parameter is skipped: one that got no gradient sees a zero gradient.
  void step(double lr, double grad_scale = 1.0) override;
  int64_t steps_taken() const override { return steps_taken_; }
  void set_steps_taken(int64_t steps) override;

  // Collective. Global L2 norm of the averaged gradients: each rank sums the squares of its
  // shard, the sums are all-reduced.
  double grad_norm() override;

  // Both fill the gradient buckets with zeros: they are persistent (the parameters' grads are
  // views into them), so there is nothing to free. DataParallel zeroes them by itself at the
  // first micro-batch of every step.
  void zero_grad();
  void clear_grads() override;

  // Collective (every rank calls; rank 0 typically saves): AdamW's keys and layout, full f32
  // tensors on this GPU, in parameter order.
  std::vector<std::pair<std::string, Tensor>> state() const override;
  // Not collective: each rank takes its pieces of every full tensor (f32, any device, AdamW's
  // keys and shapes) and writes every parameter's compute copy from its master.
  void load_state(const std::map<std::string, Tensor>& state) override;
  // Sets one parameter's master weights (f32, its shape, any device) and compute copy; every
  // rank must pass the same values. The moments are untouched.
  void set_master(const std::string& name, const Tensor& f32_values) override;

  // About 12 / world_size bytes per parameter.
  size_t state_bytes() const override { return 3 * master_.nbytes(); }
  const AdamWOptions& options() const { return options_; }
  const ZeroStatePlan& plan() const { return plan_; }

 private:
  size_t find(const std::string& name, const char* where) const;
  void copy_pieces(size_t param, const Tensor& full, Tensor& state) const;
  void build_launch_table();
  void gather_weights();
  void comm_waits_for_compute() const;
  void compute_waits_for_comm() const;

  DataParallel& ddp_;
  AdamWOptions options_;
  ZeroStatePlan plan_;
  std::vector<std::vector<size_t>> pieces_of_param_;
  DType dtype_ = DType::bf16;  // the parameters' (compute) dtype
  Device device_;
  int64_t steps_taken_ = 0;

  Tensor master_;  // [plan_.elements] f32
  Tensor exp_avg_;
  Tensor exp_avg_sq_;
  std::vector<Tensor> weights_;  // per bucket [elements], dtype_: all-gathered updated weights

  Tensor device_table_;  // AdamWTensor[pieces] in device memory
  int64_t table_chunks_ = 0;
  Tensor norm_workspace_;
  Tensor norm_sum_;  // one f32 on the device
  // The compute stream and the events ordering it against the communication stream: CUDA
  // types, defined in zero_optimizer_nccl.cpp.
  struct Streams;
  std::unique_ptr<Streams> streams_;
};

}  // namespace infllm::distributed
