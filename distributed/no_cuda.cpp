// The CPU-only build's distributed/replica_group.cpp: there is no NCCL, so joining a group of
// ranks is an error (core/no_cuda.h's advice, with what the launcher asked for).
#include "core/error.h"
#include "distributed/replica_group.h"

namespace infllm::distributed {

std::unique_ptr<ReplicaGroup> join_replica_group(const LaunchEnv& env, const ProcessGroupOptions&) {
  fail("this build has no CUDA backend, but the launcher started ", env.world_size,
       " ranks: data-parallel training needs GPUs and NCCL; rebuild with nvcc present (the CUDA "
       "toolkit installed, cmake without -DINFLLM_CUDA=OFF), or start one process");
}

}  // namespace infllm::distributed
