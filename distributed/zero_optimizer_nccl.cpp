// ZeroAdamW over the process group's stream (CUDA builds; distributed/no_cuda.cpp stands in
// without CUDA).
#include "distributed/zero_optimizer.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <set>

#include "core/cuda_check.h"
#include "core/ops.h"

namespace infllm::distributed {
namespace {

const char* const kStatePrefixes[] = {"master/", "exp_avg/", "exp_avg_sq/"};

CommDType comm_dtype(DType dtype) {
  return dtype == DType::bf16 ? CommDType::bf16 : CommDType::f32;
}

// `values` checked to be the full f32 state of `param`.
void check_full(const char* where, const std::string& key, const Tensor& values,
                const Tensor& param) {
  INFLLM_CHECK(values.defined(), where, ": '", key, "' is an undefined tensor");
  INFLLM_CHECK(values.dtype() == DType::f32 && values.shape() == param.shape(), where, ": '", key,
               "' is ", values.str(), " but the optimizer needs f32 of shape ",
               shape_str(param.shape()),
               "; the checkpoint was written for a different model (check the model section)");
}

// Writes f32 master values into the parameter's compute copy.
void write_compute_copy(const Tensor& master, Tensor& param) {
  Tensor dst = param.detach();
  copy_into(ops::cast(master, dst.dtype()), dst);
}

}  // namespace

// The compute stream of the parameters' device and the events that order it against the
// communication stream.
struct ZeroAdamW::Streams {
  cudaStream_t compute = nullptr;
  cudaEvent_t compute_ready = nullptr;
  cudaEvent_t comm_done = nullptr;
};

ZeroAdamW::ZeroAdamW(DataParallel& ddp, AdamWOptions options)
    : ddp_(ddp), options_(std::move(options)), streams_(std::make_unique<Streams>()) {
  check_adamw_options(options_, "ZeroAdamW");
  const GradientLayout& layout = ddp_.layout();
  const std::vector<NamedParameter>& params = ddp_.params();
  ProcessGroup& pg = ddp_.process_group();
  INFLLM_CHECK(layout.reduction == GradientReduction::reduce_scatter,
               "ZeroAdamW: the DataParallel all-reduces gradients; build it with "
               "GradientReduction::reduce_scatter for ZeRO");
  std::set<std::string> names;
  dtype_ = params.front().second->dtype();
  for (const auto& [name, param] : params) {
    INFLLM_CHECK(names.insert(name).second, "ZeroAdamW: parameter name '", name,
                 "' appears twice; names must be unique (they key the checkpoint state)");
    INFLLM_CHECK(param->dtype() == dtype_ && (dtype_ == DType::bf16 || dtype_ == DType::f32),
                 "ZeroAdamW: parameter '", name, "' is ", param->str(), " but '",
                 params.front().first, "' is ", dtype_name(dtype_),
                 "; ZeRO needs every parameter in one compute dtype, bf16 or f32");
  }
  device_ = params.front().second->device();
  streams_->compute = static_cast<cudaStream_t>(device_stream(device_));
  plan_ = plan_zero_state(layout, pg.rank());
  pieces_of_param_.assign(params.size(), {});
  for (size_t i = 0; i < plan_.pieces.size(); ++i)
    pieces_of_param_[plan_.pieces[i].param].push_back(i);

  master_ = ops::zeros({int64_t(plan_.elements)}, DType::f32, device_);
  exp_avg_ = ops::zeros({int64_t(plan_.elements)}, DType::f32, device_);
  exp_avg_sq_ = ops::zeros({int64_t(plan_.elements)}, DType::f32, device_);
  for (size_t p = 0; p < params.size(); ++p)
    copy_pieces(p, ops::cast(params[p].second->detach(), DType::f32), master_);
  for (const BucketLayout& bucket : layout.buckets)
    weights_.push_back(ops::zeros({int64_t(bucket.elements)}, dtype_, device_));
  norm_sum_ = Tensor::empty({1}, DType::f32, device_);
  CUDA_CHECK(cudaEventCreateWithFlags(&streams_->compute_ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&streams_->comm_done, cudaEventDisableTiming));
  build_launch_table();
}

ZeroAdamW::~ZeroAdamW() {
  // Buffers are freed in compute-stream order: let that order include the collectives.
  if (cudaEventRecord(streams_->comm_done,
                      static_cast<cudaStream_t>(ddp_.process_group().stream())) == cudaSuccess)
    cudaStreamWaitEvent(streams_->compute, streams_->comm_done, 0);
  cudaEventDestroy(streams_->compute_ready);
  cudaEventDestroy(streams_->comm_done);
}

// One AdamWTensor per piece: master and moments in the state, the averaged gradient in the
// bucket's shard, the compute copy in this rank's slice of the bucket's weight buffer. The
// pointers never change, so the table is uploaded once.
void ZeroAdamW::build_launch_table() {
  std::vector<AdamWTensor> table;
  for (const ZeroPiece& piece : plan_.pieces) {
    AdamWTensor t;
    t.param = master_.data<float>() + piece.state_offset;
    t.exp_avg = exp_avg_.data<float>() + piece.state_offset;
    t.exp_avg_sq = exp_avg_sq_.data<float>() + piece.state_offset;
    t.grad = ddp_.bucket_buffer(piece.bucket).data<float>() + piece.bucket_offset;
    t.param_bf16 =
        dtype_ == DType::bf16 ? bf16_bits(weights_[piece.bucket]) + piece.bucket_offset : nullptr;
    t.n = int64_t(piece.end - piece.begin);
    t.weight_decay = adamw_weight_decay(ddp_.params()[piece.param].first, options_);
    table.push_back(t);
  }
  if (table.empty()) return;  // more ranks than elements: this rank owns only padding
  table_chunks_ = adamw_plan_chunks(table.data(), int(table.size()));
  const size_t bytes = table.size() * sizeof(AdamWTensor);
  Tensor host = Tensor::empty({int64_t((bytes + 3) / 4)}, DType::i32, Device::cpu());
  std::memcpy(host.data_ptr(), table.data(), bytes);
  device_table_ = host.to(device_);
  norm_workspace_ = scratch(grad_sum_squares_cuda_workspace_bytes(table_chunks_), device_);
}

void ZeroAdamW::comm_waits_for_compute() const {
  CUDA_CHECK(cudaEventRecord(streams_->compute_ready, streams_->compute));
  ddp_.process_group().wait_event(streams_->compute_ready);
}

void ZeroAdamW::compute_waits_for_comm() const {
  ddp_.process_group().record_event(streams_->comm_done);
  CUDA_CHECK(cudaStreamWaitEvent(streams_->compute, streams_->comm_done, 0));
}

// Copies this rank's pieces of parameter `param` from its full f32 values (on device_) into
// one of the flat state tensors.
void ZeroAdamW::copy_pieces(size_t param, const Tensor& full, Tensor& state) const {
  const Tensor flat = full.contiguous().view({-1});
  for (size_t i : pieces_of_param_[param]) {
    const ZeroPiece& piece = plan_.pieces[i];
    const int64_t n = int64_t(piece.end - piece.begin);
    Tensor dst = state.slice(0, int64_t(piece.state_offset), int64_t(piece.state_offset) + n);
    copy_into(flat.slice(0, int64_t(piece.begin), int64_t(piece.end)), dst);
  }
}

void ZeroAdamW::step(double lr, double grad_scale) {
  const AdamWHyper hp = adamw_hyper(options_, lr, grad_scale, steps_taken_ + 1, "ZeroAdamW::step");
  if (!plan_.pieces.empty())
    adamw_step_cuda(static_cast<const AdamWTensor*>(device_table_.data_ptr()),
                    int(plan_.pieces.size()), table_chunks_, hp, streams_->compute);
  if (dtype_ == DType::f32) {
    // f32 parameters: the masters are the compute values; put them where the gather reads.
    const int rank = ddp_.process_group().rank();
    for (size_t b = 0; b < weights_.size(); ++b) {
      const ZeroShardPlan& shards = ddp_.layout().buckets[b].shards;
      CUDA_CHECK(cudaMemcpyAsync(weights_[b].data<float>() + shards.shard_begin(rank),
                                 master_.data<float>() + plan_.bucket_offsets[b],
                                 shards.shard_elements * sizeof(float), cudaMemcpyDeviceToDevice,
                                 streams_->compute));
    }
  }
  gather_weights();
  ++steps_taken_;
}

// Every rank's updated slice of each bucket, then each parameter's range into the parameter.
void ZeroAdamW::gather_weights() {
  ProcessGroup& pg = ddp_.process_group();
  const GradientLayout& layout = ddp_.layout();
  const size_t element_bytes = dtype_size(dtype_);
  comm_waits_for_compute();
  for (size_t b = 0; b < weights_.size(); ++b) {
    const ZeroShardPlan& shards = layout.buckets[b].shards;
    auto* base = static_cast<char*>(weights_[b].data_ptr());
    pg.all_gather(base + shards.shard_begin(pg.rank()) * element_bytes, base, shards.shard_elements,
                  comm_dtype(dtype_));
  }
  compute_waits_for_comm();
  const std::vector<NamedParameter>& params = ddp_.params();
  for (size_t p = 0; p < params.size(); ++p) {
    const auto* from = static_cast<const char*>(weights_[layout.bucket_of[p]].data_ptr()) +
                       layout.offset_of[p] * element_bytes;
    CUDA_CHECK(cudaMemcpyAsync(params[p].second->data_ptr(), from, params[p].second->nbytes(),
                               cudaMemcpyDeviceToDevice, streams_->compute));
  }
}

void ZeroAdamW::set_steps_taken(int64_t steps) {
  INFLLM_CHECK(steps >= 0, "ZeroAdamW::set_steps_taken: steps=", steps, " must be >= 0");
  steps_taken_ = steps;
}

double ZeroAdamW::grad_norm() {
  if (plan_.pieces.empty()) {
    ops::fill_(norm_sum_, 0.0);
  } else {
    grad_sum_squares_cuda(static_cast<const AdamWTensor*>(device_table_.data_ptr()),
                          int(plan_.pieces.size()), table_chunks_, norm_workspace_.data_ptr(),
                          norm_sum_.data<float>(), streams_->compute);
  }
  comm_waits_for_compute();
  ddp_.process_group().all_reduce(norm_sum_.data<float>(), 1, CommDType::f32, ReduceOp::sum);
  compute_waits_for_comm();
  return std::sqrt(norm_sum_.item());
}

void ZeroAdamW::zero_grad() {
  ddp_.zero_grad();
}

void ZeroAdamW::clear_grads() {
  ddp_.zero_grad();
}

std::vector<std::pair<std::string, Tensor>> ZeroAdamW::state() const {
  ProcessGroup& pg = ddp_.process_group();
  const GradientLayout& layout = ddp_.layout();
  const Tensor* shards[] = {&master_, &exp_avg_, &exp_avg_sq_};
  std::vector<Tensor> full[3];  // per state tensor, per bucket: the gathered flat bucket
  comm_waits_for_compute();
  for (int k = 0; k < 3; ++k) {
    for (size_t b = 0; b < layout.buckets.size(); ++b) {
      const BucketLayout& bucket = layout.buckets[b];
      full[k].push_back(Tensor::empty({int64_t(bucket.elements)}, DType::f32, device_));
      pg.all_gather(shards[k]->data<float>() + plan_.bucket_offsets[b], full[k].back().data_ptr(),
                    bucket.shards.shard_elements, CommDType::f32);
    }
  }
  compute_waits_for_comm();
  std::vector<std::pair<std::string, Tensor>> out;
  const std::vector<NamedParameter>& params = ddp_.params();
  for (size_t p = 0; p < params.size(); ++p) {
    const int64_t offset = int64_t(layout.offset_of[p]);
    const Tensor& param = *params[p].second;
    for (int k = 0; k < 3; ++k)
      out.emplace_back(kStatePrefixes[k] + params[p].first,
                       full[k][layout.bucket_of[p]]
                           .slice(0, offset, offset + param.numel())
                           .view(param.shape()));
  }
  return out;
}

size_t ZeroAdamW::find(const std::string& name, const char* where) const {
  const std::vector<NamedParameter>& params = ddp_.params();
  for (size_t p = 0; p < params.size(); ++p)
    if (params[p].first == name) return p;
  fail(where, ": no parameter named '", name, "' in this optimizer (", params.size(),
       " parameters, the first '", params.front().first, "')");
}

void ZeroAdamW::load_state(const std::map<std::string, Tensor>& state) {
  for (const auto& [key, value] : state)
    for (const char* prefix : kStatePrefixes)
      if (key.rfind(prefix, 0) == 0) find(key.substr(std::strlen(prefix)), "ZeroAdamW::load_state");
  // Check everything before changing anything: a bad checkpoint leaves the optimizer as it was.
  const std::vector<NamedParameter>& params = ddp_.params();
  std::vector<const Tensor*> values;
  for (size_t p = 0; p < params.size(); ++p) {
    for (const char* prefix : kStatePrefixes) {
      const std::string key = prefix + params[p].first;
      const auto it = state.find(key);
      INFLLM_CHECK(it != state.end(), "ZeroAdamW::load_state: the state has no '", key,
                   "'; it was saved for a different model or by a different optimizer");
      check_full("ZeroAdamW::load_state", key, it->second, *params[p].second);
      values.push_back(&it->second);
    }
  }
  Tensor* shards[] = {&master_, &exp_avg_, &exp_avg_sq_};
  for (size_t p = 0; p < params.size(); ++p) {
    for (int k = 0; k < 3; ++k) {
      const Tensor full = values[3 * p + k]->to(device_);
      copy_pieces(p, full, *shards[k]);
      if (k == 0) write_compute_copy(full, *params[p].second);
    }
  }
}

void ZeroAdamW::set_master(const std::string& name, const Tensor& f32_values) {
  const size_t p = find(name, "ZeroAdamW::set_master");
  check_full("ZeroAdamW::set_master", name, f32_values, *ddp_.params()[p].second);
  const Tensor full = f32_values.to(device_);
  copy_pieces(p, full, master_);
  write_compute_copy(full, *ddp_.params()[p].second);
}

}  // namespace infllm::distributed
