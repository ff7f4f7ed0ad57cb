// ReplicaGroup over NCCL (CUDA builds; distributed/no_cuda.cpp stands in without CUDA).
#include "distributed/replica_group.h"

#include <cuda_runtime.h>

#include <map>
#include <string>
#include <utility>

#include "core/cuda_check.h"
#include "core/tensor.h"
#include "distributed/data_parallel.h"
#include "distributed/zero_optimizer.h"

namespace infllm::distributed {
namespace {

// A data-parallel run's optimizer owns the gradient averaging hooked into the model's
// parameters, so the hooks go away with the optimizer, while the model still exists (callers
// declare the optimizer after the model). The wrapped optimizer is destroyed first: ZeroAdamW
// refers to the DataParallel.
class DataParallelOptimizer : public Optimizer {
 public:
  DataParallelOptimizer(std::unique_ptr<DataParallel> data_parallel,
                        std::unique_ptr<Optimizer> optimizer)
      : data_parallel_(std::move(data_parallel)), optimizer_(std::move(optimizer)) {}
  ~DataParallelOptimizer() override { optimizer_.reset(); }

  void step(double lr, double grad_scale) override { optimizer_->step(lr, grad_scale); }
  int64_t steps_taken() const override { return optimizer_->steps_taken(); }
  void set_steps_taken(int64_t steps) override { optimizer_->set_steps_taken(steps); }
  double grad_norm() override { return optimizer_->grad_norm(); }
  void clear_grads() override { optimizer_->clear_grads(); }
  std::vector<std::pair<std::string, Tensor>> state() const override { return optimizer_->state(); }
  void load_state(const std::map<std::string, Tensor>& state) override {
    optimizer_->load_state(state);
  }
  void set_master(const std::string& name, const Tensor& f32_values) override {
    optimizer_->set_master(name, f32_values);
  }
  size_t state_bytes() const override { return optimizer_->state_bytes(); }

 private:
  std::unique_ptr<DataParallel> data_parallel_;
  std::unique_ptr<Optimizer> optimizer_;
};

class NcclReplicaGroup : public ReplicaGroup {
 public:
  NcclReplicaGroup(const LaunchEnv& env, const ProcessGroupOptions& options)
      : group_(env, options) {}

  Device device() const override { return Device::cuda(group_.device()); }

  std::unique_ptr<Optimizer> make_optimizer(std::vector<NamedParameter> params,
                                            const AdamWOptions& options, bool zero,
                                            size_t bucket_bytes) override {
    auto data_parallel = std::make_unique<DataParallel>(
        group_, params, bucket_bytes,
        zero ? GradientReduction::reduce_scatter : GradientReduction::all_reduce);
    data_parallel->broadcast_parameters();  // before the optimizer copies them into its masters
    std::unique_ptr<Optimizer> optimizer;
    if (zero)
      optimizer = std::make_unique<ZeroAdamW>(*data_parallel, options);
    else
      optimizer = std::make_unique<AdamW>(std::move(params), options);
    data_parallel_ = data_parallel.get();
    return std::make_unique<DataParallelOptimizer>(std::move(data_parallel), std::move(optimizer));
  }

  void before_backward(bool last) override {
    if (data_parallel_) data_parallel_->prepare_backward(last);
  }
  void after_backward() override {
    if (data_parallel_) data_parallel_->finish_backward();
  }

  std::vector<double> mean(std::vector<double> values) override {
    const int64_t n = int64_t(values.size());
    Tensor on_device = Tensor::from_vector(values, {n}, Device::cpu()).to(device());
    CUDA_CHECK(cudaDeviceSynchronize());  // the copy is done before NCCL's stream reads it
    group_.all_reduce(on_device.data_ptr(), size_t(n), CommDType::f64, ReduceOp::avg);
    group_.synchronize();
    return on_device.to(Device::cpu()).to_vector<double>();
  }

  double exposed_communication_ms() override {
    return data_parallel_ ? data_parallel_->last_exposed_ms() : 0;
  }

 private:
  ProcessGroup group_;
  DataParallel* data_parallel_ = nullptr;  // owned by make_optimizer's result
};

}  // namespace

std::unique_ptr<ReplicaGroup> join_replica_group(const LaunchEnv& env,
                                                 const ProcessGroupOptions& options) {
  return std::make_unique<NcclReplicaGroup>(env, options);
}

}  // namespace infllm::distributed
