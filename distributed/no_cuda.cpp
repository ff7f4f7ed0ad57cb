// The CPU-only build's CUDA sources of distributed/ (replica_group.cpp and the *_nccl.cpp files):
// there is no NCCL, so joining a group of ranks or building a ProcessGroup is an error
// (core/no_cuda.h). DataParallel and ZeroAdamW need a ProcessGroup, which cannot exist here, so
// their stubs below are never reached; they only let callers link without an #if.
#include "core/no_cuda.h"
#include "distributed/data_parallel.h"
#include "distributed/process_group.h"
#include "distributed/replica_group.h"
#include "distributed/zero_optimizer.h"

namespace infllm::distributed {

std::unique_ptr<ReplicaGroup> join_replica_group(const LaunchEnv& env, const ProcessGroupOptions&) {
  fail("this build has no CUDA backend, but the launcher started ", env.world_size,
       " ranks: data-parallel training needs GPUs and NCCL; rebuild with nvcc present (the CUDA "
       "toolkit installed, cmake without -DINFLLM_CUDA=OFF), or start one process");
}

// Empty: the CUDA build's definitions hold NCCL and CUDA handles. They are complete here only
// so that the unique_ptr members can be destroyed.
class ProcessGroup::Communicator {};
struct DataParallel::Streams {};
struct ZeroAdamW::Streams {};

ProcessGroup::ProcessGroup(const LaunchEnv& env, const ProcessGroupOptions&) : env_(env) {
  no_cuda_backend("ProcessGroup");
}
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::all_reduce(void*, size_t, CommDType, ReduceOp) {
  no_cuda_backend("ProcessGroup::all_reduce");
}
void ProcessGroup::broadcast(void*, size_t, CommDType, int) {
  no_cuda_backend("ProcessGroup::broadcast");
}
void ProcessGroup::all_gather(const void*, void*, size_t, CommDType) {
  no_cuda_backend("ProcessGroup::all_gather");
}
void ProcessGroup::reduce_scatter(const void*, void*, size_t, CommDType, ReduceOp) {
  no_cuda_backend("ProcessGroup::reduce_scatter");
}
void ProcessGroup::barrier() {
  no_cuda_backend("ProcessGroup::barrier");
}
void* ProcessGroup::stream() const {
  no_cuda_backend("ProcessGroup::stream");
}
void ProcessGroup::wait_event(void*) {
  no_cuda_backend("ProcessGroup::wait_event");
}
void ProcessGroup::record_event(void*) {
  no_cuda_backend("ProcessGroup::record_event");
}
void ProcessGroup::synchronize() {
  no_cuda_backend("ProcessGroup::synchronize");
}

DataParallel::DataParallel(ProcessGroup& pg, std::vector<NamedParameter>, size_t, GradientReduction)
    : pg_(pg), readiness_(GradientLayout{}, {}) {
  no_cuda_backend("DataParallel");
}
DataParallel::~DataParallel() = default;
void DataParallel::broadcast_parameters() {
  no_cuda_backend("DataParallel::broadcast_parameters");
}
bool DataParallel::parameters_identical() {
  no_cuda_backend("DataParallel::parameters_identical");
}
void DataParallel::prepare_backward(bool) {
  no_cuda_backend("DataParallel::prepare_backward");
}
void DataParallel::finish_backward() {
  no_cuda_backend("DataParallel::finish_backward");
}
double DataParallel::last_exposed_ms() {
  no_cuda_backend("DataParallel::last_exposed_ms");
}
void DataParallel::zero_grad() {
  no_cuda_backend("DataParallel::zero_grad");
}

ZeroAdamW::ZeroAdamW(DataParallel& ddp, AdamWOptions) : ddp_(ddp) {
  no_cuda_backend("ZeroAdamW");
}
ZeroAdamW::~ZeroAdamW() = default;
void ZeroAdamW::step(double, double) {
  no_cuda_backend("ZeroAdamW::step");
}
void ZeroAdamW::set_steps_taken(int64_t) {
  no_cuda_backend("ZeroAdamW::set_steps_taken");
}
double ZeroAdamW::grad_norm() {
  no_cuda_backend("ZeroAdamW::grad_norm");
}
void ZeroAdamW::zero_grad() {
  no_cuda_backend("ZeroAdamW::zero_grad");
}
void ZeroAdamW::clear_grads() {
  no_cuda_backend("ZeroAdamW::clear_grads");
}
std::vector<std::pair<std::string, Tensor>> ZeroAdamW::state() const {
  no_cuda_backend("ZeroAdamW::state");
}
void ZeroAdamW::load_state(const std::map<std::string, Tensor>&) {
  no_cuda_backend("ZeroAdamW::load_state");
}
void ZeroAdamW::set_master(const std::string&, const Tensor&) {
  no_cuda_backend("ZeroAdamW::set_master");
}

}  // namespace infllm::distributed
