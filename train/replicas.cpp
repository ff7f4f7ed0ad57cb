#include "train/replicas.h"

#include <cstdio>

#include "core/error.h"
#include "train/run_setup.h"
#if INFLLM_WITH_CUDA
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "distributed/data_parallel.h"
#include "distributed/process_group.h"
#include "distributed/zero_optimizer.h"
#endif

namespace infllm::train {

namespace dist = infllm::distributed;

#if INFLLM_WITH_CUDA
namespace {

// A data-parallel run's optimizer owns the gradient averaging hooked into the model's
// parameters, so the hooks go away with the optimizer, while the model still exists (callers
// declare the optimizer after the model). The wrapped optimizer is destroyed first: ZeroAdamW
// refers to the DataParallel.
class DataParallelOptimizer : public Optimizer {
 public:
  DataParallelOptimizer(std::unique_ptr<dist::DataParallel> data_parallel,
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
  std::unique_ptr<dist::DataParallel> data_parallel_;
  std::unique_ptr<Optimizer> optimizer_;
};

}  // namespace
#endif

Replicas::Replicas(const Recipe& recipe)
    : env_(dist::detect_launch_env(dist::process_env_reader())),
      zero_(recipe.distributed.zero),
      bucket_bytes_(size_t(recipe.distributed.bucket_mb) << 20) {
  if (!distributed()) {
    device_ = choose_device(recipe);
    if (zero_)
      std::fprintf(stderr,
                   "infllm: note: distributed.zero=1 shards optimizer state across ranks; "
                   "with one process it has no effect (start several with --nproc N)\n");
    return;
  }
  INFLLM_CHECK(recipe.train.device != DeviceChoice::cpu, "train.device: cpu with ", env_.world_size,
               " ranks: data-parallel training averages gradients with NCCL "
               "on GPUs (set train.device=auto or cuda, or start one process)");
#if INFLLM_WITH_CUDA
  dist::ProcessGroupOptions options;
  options.rendezvous = dist::parse_rendezvous_spec(recipe.distributed.init);
  options.rendezvous.run_key = recipe.train.out_dir;  // ranks of another run are turned away
  options.rendezvous.timeout = std::chrono::seconds(recipe.distributed.timeout_s);
  options.timeout = std::chrono::seconds(recipe.distributed.timeout_s);
  group_ = std::make_unique<dist::ProcessGroup>(env_, options);
  device_ = Device::cuda(group_->device());
#else
  fail("this infllm was built without CUDA, but the launcher started ", env_.world_size,
       " ranks: data-parallel training needs GPUs and NCCL (rebuild with the CUDA "
       "toolkit, or start one process)");
#endif
}

Replicas::~Replicas() = default;

const char* Replicas::optimizer_name() const {
  if (!distributed()) return "AdamW";
  return zero_ ? "ZeRO-1 AdamW (state sharded across ranks)" : "AdamW (replicated)";
}

std::unique_ptr<Optimizer> Replicas::make_optimizer(TransformerLM& model,
                                                    const AdamWOptions& options) {
  if (!distributed()) return std::make_unique<AdamW>(model.named_parameters(), options);
#if INFLLM_WITH_CUDA
  auto data_parallel = std::make_unique<dist::DataParallel>(
      *group_, model.named_parameters(), bucket_bytes_,
      zero_ ? dist::GradientReduction::reduce_scatter : dist::GradientReduction::all_reduce);
  data_parallel->broadcast_parameters();  // before the optimizer copies them into its masters
  std::unique_ptr<Optimizer> optimizer;
  if (zero_)
    optimizer = std::make_unique<dist::ZeroAdamW>(*data_parallel, options);
  else
    optimizer = std::make_unique<AdamW>(model.named_parameters(), options);
  data_parallel_ = data_parallel.get();
  return std::make_unique<DataParallelOptimizer>(std::move(data_parallel), std::move(optimizer));
#else
  return nullptr;  // unreachable: the constructor refused several ranks
#endif
}

void Replicas::before_backward(bool last) {
#if INFLLM_WITH_CUDA
  if (data_parallel_) data_parallel_->prepare_backward(last);
#endif
  (void)last;
}

void Replicas::after_backward() {
#if INFLLM_WITH_CUDA
  if (data_parallel_) data_parallel_->finish_backward();
#endif
}

std::vector<double> Replicas::mean(std::vector<double> values) {
#if INFLLM_WITH_CUDA
  if (!group_) return values;
  const int64_t n = int64_t(values.size());
  Tensor on_device = Tensor::from_vector(values, {n}, Device::cpu()).to(device_);
  CUDA_CHECK(cudaDeviceSynchronize());  // the copy is done before NCCL's stream reads it
  group_->all_reduce(on_device.data_ptr(), size_t(n), dist::CommDType::f64, dist::ReduceOp::avg);
  group_->synchronize();
  return on_device.to(Device::cpu()).to_vector<double>();
#else
  return values;
#endif
}

double Replicas::exposed_communication_ms() {
#if INFLLM_WITH_CUDA
  if (data_parallel_) return data_parallel_->last_exposed_ms();
#endif
  return 0;
}

}  // namespace infllm::train
