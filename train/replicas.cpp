#include "train/replicas.h"

#include <chrono>
#include <cstdio>
#include <utility>

#include "core/error.h"
#include "train/run_setup.h"

namespace infllm::train {

namespace dist = infllm::distributed;

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
  dist::ProcessGroupOptions options;
  options.rendezvous = dist::parse_rendezvous_spec(recipe.distributed.init);
  options.rendezvous.run_key = recipe.train.out_dir;  // ranks of another run are turned away
  options.rendezvous.timeout = std::chrono::seconds(recipe.distributed.timeout_s);
  options.timeout = std::chrono::seconds(recipe.distributed.timeout_s);
  group_ = dist::join_replica_group(env_, options);
  device_ = group_->device();
}

Replicas::~Replicas() = default;

const char* Replicas::optimizer_name() const {
  if (!distributed()) return "AdamW";
  return zero_ ? "ZeRO-1 AdamW (state sharded across ranks)" : "AdamW (replicated)";
}

std::unique_ptr<Optimizer> Replicas::make_optimizer(TransformerLM& model,
                                                    const AdamWOptions& options) {
  if (!distributed()) return std::make_unique<AdamW>(model.named_parameters(), options);
  return group_->make_optimizer(model.named_parameters(), options, zero_ != 0, bucket_bytes_);
}

void Replicas::before_backward(bool last) {
  if (group_) group_->before_backward(last);
}

void Replicas::after_backward() {
  if (group_) group_->after_backward();
}

std::vector<double> Replicas::mean(std::vector<double> values) {
  return group_ ? group_->mean(std::move(values)) : values;
}

double Replicas::exposed_communication_ms() {
  return group_ ? group_->exposed_communication_ms() : 0;
}

}  // namespace infllm::train
