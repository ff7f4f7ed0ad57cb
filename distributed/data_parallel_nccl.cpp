// DataParallel over the process group's stream (CUDA builds; distributed/no_cuda.cpp stands in
// without CUDA).
#include "distributed/data_parallel.h"

#include <cuda_runtime.h>

#include <cstring>

#include "core/cuda_check.h"
#include "core/ops.h"

namespace infllm::distributed {
namespace {

CommDType comm_dtype(DType dtype, const std::string& name) {
  switch (dtype) {
    case DType::f32:
      return CommDType::f32;
    case DType::bf16:
      return CommDType::bf16;
    case DType::f64:
      return CommDType::f64;
    case DType::i32:
      return CommDType::i32;
    case DType::i64:
      return CommDType::i64;
    default:
      fail("DataParallel: parameter '", name, "' has dtype ", dtype_name(dtype),
           ", which NCCL collectives here do not move (f32 bf16 f64 i32 i64)");
  }
}

// The parameters' element counts, after checking each can take a bucket view as its grad.
std::vector<size_t> checked_elements(const std::vector<NamedParameter>& params, int device) {
  INFLLM_CHECK(!params.empty(), "DataParallel: no parameters");
  std::vector<size_t> elements;
  for (const auto& [name, param] : params) {
    INFLLM_CHECK(param != nullptr && param->defined(), "DataParallel: parameter '", name,
                 "' is null or undefined");
    INFLLM_CHECK(param->device() == Device::cuda(device), "DataParallel: parameter '", name,
                 "' is on ", param->device().str(),
                 " but this rank's process group uses cuda:", device,
                 "; move the model to the rank's GPU first");
    INFLLM_CHECK(param->requires_grad(), "DataParallel: parameter '", name,
                 "' does not require grad; pass only trainable parameters");
    INFLLM_CHECK(param->is_contiguous() && param->numel() > 0, "DataParallel: parameter '", name,
                 "' ", param->str(), " must be contiguous and non-empty");
    elements.push_back(size_t(param->numel()));
  }
  return elements;
}

std::vector<std::string> names_of(const std::vector<NamedParameter>& params) {
  std::vector<std::string> names;
  for (const auto& named : params) names.push_back(named.first);
  return names;
}

}  // namespace

// The compute stream of the parameters' device and the events that order it against the
// communication stream.
struct DataParallel::Streams {
  cudaStream_t compute = nullptr;
  cudaEvent_t compute_ready = nullptr;  // compute stream -> communication stream
  cudaEvent_t comm_done = nullptr;      // communication stream -> compute stream
  cudaEvent_t backward_end = nullptr;   // timing: end of the synced backward
  cudaEvent_t reduce_end = nullptr;     // timing: end of its last collective
};

DataParallel::DataParallel(ProcessGroup& pg, std::vector<NamedParameter> params,
                           size_t bucket_bytes, GradientReduction reduction)
    : pg_(pg),
      params_(std::move(params)),
      layout_(plan_gradient_layout(checked_elements(params_, pg.device()), bucket_bytes, reduction,
                                   pg.world_size())),
      readiness_(layout_, names_of(params_)),
      device_(Device::cuda(pg.device())),
      streams_(std::make_unique<Streams>()) {
  streams_->compute = static_cast<cudaStream_t>(device_stream(device_));
  for (const BucketLayout& bucket : layout_.buckets)
    buffers_.push_back(ops::zeros({int64_t(bucket.elements)}, DType::f32, device_));
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& param = *params_[i].second;
    const int64_t offset = int64_t(layout_.offset_of[i]);
    grad_views_.push_back(buffers_[layout_.bucket_of[i]]
                              .slice(0, offset, offset + param.numel())
                              .view(param.shape()));
  }
  CUDA_CHECK(cudaEventCreateWithFlags(&streams_->compute_ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&streams_->comm_done, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreate(&streams_->backward_end));
  CUDA_CHECK(cudaEventCreate(&streams_->reduce_end));
  for (size_t i = 0; i < params_.size(); ++i) {
    std::function<void()>& hook = params_[i].second->ensure_autograd_meta().on_grad_accumulated;
    INFLLM_CHECK(!hook, "DataParallel: parameter '", params_[i].first,
                 "' already has a gradient hook (another DataParallel wraps it); wrap each model "
                 "once");
    hook = [this, i] { grad_accumulated(i); };
  }
}

DataParallel::~DataParallel() {
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& param = *params_[i].second;
    param.ensure_autograd_meta().on_grad_accumulated = nullptr;
    if (param.grad().defined() && param.grad().data_ptr() == grad_views_[i].data_ptr())
      param.set_grad(Tensor());
  }
  // The buffers are freed in compute-stream order: let that order include the collectives.
  if (streams_->comm_done != nullptr &&
      cudaEventRecord(streams_->comm_done, static_cast<cudaStream_t>(pg_.stream())) == cudaSuccess)
    cudaStreamWaitEvent(streams_->compute, streams_->comm_done, 0);
  for (cudaEvent_t event :
       {streams_->compute_ready, streams_->comm_done, streams_->backward_end, streams_->reduce_end})
    if (event != nullptr) cudaEventDestroy(event);
}

void DataParallel::comm_waits_for_compute() {
  CUDA_CHECK(cudaEventRecord(streams_->compute_ready, streams_->compute));
  pg_.wait_event(streams_->compute_ready);
}

void DataParallel::compute_waits_for_comm() {
  pg_.record_event(streams_->comm_done);
  CUDA_CHECK(cudaStreamWaitEvent(streams_->compute, streams_->comm_done, 0));
}

void DataParallel::broadcast_parameters() {
  comm_waits_for_compute();
  for (const auto& [name, param] : params_)
    pg_.broadcast(param->data_ptr(), size_t(param->numel()), comm_dtype(param->dtype(), name), 0);
  compute_waits_for_comm();
}

bool DataParallel::parameters_identical() {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a over every parameter's bytes
  for (const auto& named : params_) {
    const Tensor host = named.second->detach().to(Device::cpu());
    const auto* bytes = static_cast<const unsigned char*>(host.data_ptr());
    for (size_t i = 0; i < host.nbytes(); ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
  }
  Tensor mine = Tensor::from_vector<int64_t>({int64_t(hash)}, {1}, device_);
  Tensor all = Tensor::empty({pg_.world_size()}, DType::i64, device_);
  comm_waits_for_compute();
  pg_.all_gather(mine.data_ptr(), all.data_ptr(), 1, CommDType::i64);
  compute_waits_for_comm();
  for (int64_t rank_hash : all.to_vector<int64_t>())
    if (rank_hash != int64_t(hash)) return false;
  return true;
}

void DataParallel::prepare_backward(bool sync) {
  INFLLM_CHECK(!armed_, "DataParallel::prepare_backward: the previous synced backward was not ",
               "finished; call finish_backward() after every backward");
  if (!step_open_) {
    zero_grad();
    step_open_ = true;
  }
  for (size_t i = 0; i < params_.size(); ++i) params_[i].second->set_grad(grad_views_[i]);
  if (sync) {
    readiness_.begin();
    armed_ = true;
  }
}

void DataParallel::grad_accumulated(size_t param) {
  if (!armed_) return;  // a micro-batch that only accumulates locally
  for (size_t bucket : readiness_.grad_accumulated(param)) reduce_bucket(bucket);
}

// Averages bucket b across ranks once the compute stream has written its gradients.
void DataParallel::reduce_bucket(size_t b) {
  comm_waits_for_compute();
  float* data = buffers_[b].data<float>();
  const BucketLayout& bucket = layout_.buckets[b];
  if (layout_.reduction == GradientReduction::all_reduce) {
    pg_.all_reduce(data, bucket.elements, CommDType::f32, ReduceOp::avg);
  } else {
    // In place: rank r's shard of the bucket receives the average of everyone's shard r.
    const size_t shard = bucket.shards.shard_elements;
    pg_.reduce_scatter(data, data + size_t(pg_.rank()) * shard, shard, CommDType::f32,
                       ReduceOp::avg);
  }
}

void DataParallel::finish_backward() {
  if (!armed_) return;
  armed_ = false;
  step_open_ = false;
  CUDA_CHECK(cudaEventRecord(streams_->backward_end, streams_->compute));
  for (size_t bucket : readiness_.finish()) reduce_bucket(bucket);
  pg_.record_event(streams_->reduce_end);
  CUDA_CHECK(cudaStreamWaitEvent(streams_->compute, streams_->reduce_end, 0));
  timed_ = true;
}

double DataParallel::last_exposed_ms() {
  INFLLM_CHECK(timed_, "DataParallel::last_exposed_ms: no synced backward has finished yet");
  pg_.synchronize();
  CUDA_CHECK(cudaEventSynchronize(streams_->backward_end));
  float ms = 0.0f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, streams_->backward_end, streams_->reduce_end));
  return ms > 0.0f ? double(ms) : 0.0;
}

void DataParallel::zero_grad() {
  for (Tensor& buffer : buffers_) ops::fill_(buffer, 0.0);
}

}  // namespace infllm::distributed
