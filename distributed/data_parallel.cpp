#include "distributed/data_parallel.h"

#include <algorithm>

#include "core/error.h"
#include "distributed/buckets.h"

namespace infllm::distributed {

GradientLayout plan_gradient_layout(const std::vector<size_t>& param_elements, size_t bucket_bytes,
                                    GradientReduction reduction, int world_size) {
  INFLLM_CHECK(world_size >= 1, "plan_gradient_layout: world size ", world_size, " must be >= 1");
  const bool scatter = reduction == GradientReduction::reduce_scatter;
  std::vector<size_t> param_bytes;
  for (size_t n : param_elements) param_bytes.push_back(n * sizeof(float));
  // reduce_scatter packs parameters (alignment of one float) so a bucket is one flat ZeRO space.
  const std::vector<GradientBucket> buckets =
      plan_gradient_buckets(param_bytes, bucket_bytes, scatter ? sizeof(float) : 256);

  GradientLayout layout;
  layout.reduction = reduction;
  layout.world_size = world_size;
  layout.bucket_of.assign(param_elements.size(), 0);
  layout.offset_of.assign(param_elements.size(), 0);
  for (const GradientBucket& bucket : buckets) {
    BucketLayout out;
    out.params = bucket.params;
    if (scatter) {
      std::vector<size_t> elements;
      for (size_t p : bucket.params) elements.push_back(param_elements[p]);
      out.shards = plan_zero_shards(elements, world_size, 16);
      out.offsets = out.shards.param_offsets;
      out.elements = out.shards.padded_elements();
    } else {
      for (size_t offset : bucket.offsets) out.offsets.push_back(offset / sizeof(float));
      out.elements = bucket.bytes / sizeof(float);
    }
    for (size_t i = 0; i < out.params.size(); ++i) {
      layout.bucket_of[out.params[i]] = layout.buckets.size();
      layout.offset_of[out.params[i]] = out.offsets[i];
    }
    layout.buckets.push_back(std::move(out));
  }
  return layout;
}

BucketReadiness::BucketReadiness(const GradientLayout& layout, std::vector<std::string> param_names)
    : bucket_of_(layout.bucket_of), names_(std::move(param_names)) {
  INFLLM_CHECK(names_.size() == bucket_of_.size(), "BucketReadiness: ", names_.size(),
               " names for ", bucket_of_.size(), " parameters");
  for (const BucketLayout& bucket : layout.buckets) bucket_params_.push_back(bucket.params);
  expected_.assign(names_.size(), 0);
  seen_.assign(names_.size(), 0);
  missing_.assign(bucket_params_.size(), 0);
}

void BucketReadiness::begin() {
  std::fill(seen_.begin(), seen_.end(), 0);
  next_release_ = 0;
  released_during_backward_ = 0;
  for (size_t b = 0; b < bucket_params_.size(); ++b) {
    missing_[b] = 0;
    for (size_t p : bucket_params_[b]) missing_[b] += expected_[p] > 0 ? 1 : 0;
  }
}

std::vector<size_t> BucketReadiness::grad_accumulated(size_t param) {
  INFLLM_CHECK(param < seen_.size(), "BucketReadiness: parameter index ", param, " out of ",
               seen_.size());
  ++seen_[param];
  if (!learned_) return {};
  const size_t bucket = bucket_of_[param];
  if (bucket < next_release_)
    fail("DataParallel: parameter '", names_[param], "' received gradient ", seen_[param],
         " of this backward after its bucket's reduction had started (the first synced backward "
         "delivered ",
         expected_[param],
         "); the backward graph changed between steps. Call "
         "DataParallel::relearn_gradient_counts() after changing the model's graph (e.g. its "
         "attention schedule)");
  if (seen_[param] == expected_[param]) --missing_[bucket];
  std::vector<size_t> released = release_ready();
  released_during_backward_ += released.size();
  return released;
}

std::vector<size_t> BucketReadiness::release_ready() {
  std::vector<size_t> released;
  while (next_release_ < bucket_params_.size() && missing_[next_release_] == 0)
    released.push_back(next_release_++);
  return released;
}

std::vector<size_t> BucketReadiness::finish() {
  std::vector<size_t> rest;
  while (next_release_ < bucket_params_.size()) rest.push_back(next_release_++);
  // The counts of this backward are what the next one will deliver (they only change when
  // the graph does; fewer than learned was still reduced correctly, at the end).
  expected_ = seen_;
  learned_ = true;
  return rest;
}

}  // namespace infllm::distributed

#if INFLLM_WITH_CUDA

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

DataParallel::DataParallel(ProcessGroup& pg, std::vector<NamedParameter> params,
                           size_t bucket_bytes, GradientReduction reduction)
    : pg_(pg),
      params_(std::move(params)),
      layout_(plan_gradient_layout(checked_elements(params_, pg.device()), bucket_bytes, reduction,
                                   pg.world_size())),
      readiness_(layout_, names_of(params_)),
      device_(Device::cuda(pg.device())) {
  compute_ = static_cast<cudaStream_t>(device_stream(device_));
  for (const BucketLayout& bucket : layout_.buckets)
    buffers_.push_back(ops::zeros({int64_t(bucket.elements)}, DType::f32, device_));
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& param = *params_[i].second;
    const int64_t offset = int64_t(layout_.offset_of[i]);
    grad_views_.push_back(buffers_[layout_.bucket_of[i]]
                              .slice(0, offset, offset + param.numel())
                              .view(param.shape()));
  }
  CUDA_CHECK(cudaEventCreateWithFlags(&compute_ready_, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&comm_done_, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreate(&backward_end_));
  CUDA_CHECK(cudaEventCreate(&reduce_end_));
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
  if (comm_done_ != nullptr && cudaEventRecord(comm_done_, pg_.stream()) == cudaSuccess)
    cudaStreamWaitEvent(compute_, comm_done_, 0);
  for (cudaEvent_t event : {compute_ready_, comm_done_, backward_end_, reduce_end_})
    if (event != nullptr) cudaEventDestroy(event);
}

void DataParallel::comm_waits_for_compute() {
  CUDA_CHECK(cudaEventRecord(compute_ready_, compute_));
  pg_.wait_event(compute_ready_);
}

void DataParallel::compute_waits_for_comm() {
  pg_.record_event(comm_done_);
  CUDA_CHECK(cudaStreamWaitEvent(compute_, comm_done_, 0));
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
  CUDA_CHECK(cudaEventRecord(backward_end_, compute_));
  for (size_t bucket : readiness_.finish()) reduce_bucket(bucket);
  pg_.record_event(reduce_end_);
  CUDA_CHECK(cudaStreamWaitEvent(compute_, reduce_end_, 0));
  timed_ = true;
}

double DataParallel::last_exposed_ms() {
  INFLLM_CHECK(timed_, "DataParallel::last_exposed_ms: no synced backward has finished yet");
  pg_.synchronize();
  CUDA_CHECK(cudaEventSynchronize(backward_end_));
  float ms = 0.0f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, backward_end_, reduce_end_));
  return ms > 0.0f ? double(ms) : 0.0;
}

void DataParallel::zero_grad() {
  for (Tensor& buffer : buffers_) ops::fill_(buffer, 0.0);
}

}  // namespace infllm::distributed

#endif  // INFLLM_WITH_CUDA
