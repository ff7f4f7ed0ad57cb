#include "optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "core/dispatch.h"
#include "core/ops.h"

namespace infllm {
namespace {

const char* const kStatePrefixes[] = {"master/", "exp_avg/", "exp_avg_sq/"};

// Writes the master weights into the parameter when the two are different tensors (bf16).
void write_compute_copy(const AdamWParamState& s) {
  if (s.param->dtype() == DType::f32) return;  // the master is the parameter
  Tensor dst = s.param->detach();
  copy_into(ops::cast(s.master, dst.dtype()), dst);
}

// `values` checked to fit the state tensor `dst` of parameter `name`, then copied into it.
void load_into(const char* where, const std::string& key, const Tensor& values, Tensor& dst) {
  INFLLM_CHECK(values.defined(), where, ": '", key, "' is an undefined tensor");
  INFLLM_CHECK(values.dtype() == DType::f32 && values.shape() == dst.shape(), where, ": '", key,
               "' is ", values.str(), " but the optimizer needs f32 of shape ",
               shape_str(dst.shape()),
               "; the checkpoint was written for a different model (check the model section)");
  copy_into(values, dst);
}

}  // namespace

void check_adamw_options(const AdamWOptions& o, const char* who) {
  INFLLM_CHECK(std::isfinite(o.lr) && o.lr >= 0, who, ": lr=", o.lr,
               " must be finite and >= 0 (optim.lr)");
  INFLLM_CHECK(o.beta1 >= 0 && o.beta1 < 1, who, ": beta1=", o.beta1,
               " must be in [0, 1) (optim.beta1)");
  INFLLM_CHECK(o.beta2 >= 0 && o.beta2 < 1, who, ": beta2=", o.beta2,
               " must be in [0, 1) (optim.beta2)");
  INFLLM_CHECK(std::isfinite(o.eps) && o.eps > 0, who, ": eps=", o.eps,
               " must be finite and > 0 (optim.eps)");
  INFLLM_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0, who,
               ": weight_decay=", o.weight_decay, " must be finite and >= 0 (optim.weight_decay)");
}

double grad_clip_scale(const AdamWOptions& o, double grad_norm) {
  return o.grad_clip > 0 && grad_norm > o.grad_clip ? o.grad_clip / grad_norm : 1.0;
}

float adamw_weight_decay(const std::string& name, const AdamWOptions& o) {
  for (const std::string& s : o.no_decay) {
    if (name.find(s) != std::string::npos) return 0.0f;
  }
  return float(o.weight_decay);
}

AdamW::AdamW(std::vector<NamedParameter> params, AdamWOptions options)
    : options_(std::move(options)) {
  check_adamw_options(options_, "AdamW");
  INFLLM_CHECK(!params.empty(), "AdamW: no parameters to optimize");
  std::set<std::string> names;
  device_ = params.front().second ? params.front().second->device() : Device::cpu();
  for (auto& [name, param] : params) {
    INFLLM_CHECK(param != nullptr && param->defined(), "AdamW: parameter '", name,
                 "' is null or undefined");
    INFLLM_CHECK(names.insert(name).second, "AdamW: parameter name '", name,
                 "' appears twice; names must be unique (they key the checkpoint state)");
    INFLLM_CHECK(param->dtype() == DType::f32 || param->dtype() == DType::bf16,
                 "AdamW: parameter '", name, "' is ", param->str(),
                 "; parameters must be f32 or bf16");
    INFLLM_CHECK(param->numel() > 0, "AdamW: parameter '", name, "' ", param->str(),
                 " has no elements");
    INFLLM_CHECK(param->is_contiguous(), "AdamW: parameter '", name, "' ", param->str(),
                 " is not contiguous; parameters are updated in place and must be contiguous");
    INFLLM_CHECK(param->device() == device_, "AdamW: parameter '", name, "' is on ",
                 param->device().str(), " but '", params.front().first, "' is on ", device_.str(),
                 "; move the whole model to one device first");
    AdamWParamState s;
    s.name = name;
    s.param = param;
    s.weight_decay = adamw_weight_decay(name, options_);
    s.master = param->dtype() == DType::f32 ? param->detach() : ops::cast(*param, DType::f32);
    s.exp_avg = ops::zeros(param->shape(), DType::f32, device_);
    s.exp_avg_sq = ops::zeros(param->shape(), DType::f32, device_);
    params_.push_back(std::move(s));
  }
}

AdamWParamState& AdamW::find(const std::string& name, const char* where) {
  for (AdamWParamState& s : params_) {
    if (s.name == name) return s;
  }
  fail(where, ": no parameter named '", name, "' in this optimizer (", params_.size(),
       " parameters, the first '", params_.front().name, "')");
}

std::vector<AdamWParamState*> AdamW::params_with_grad(const char* where) {
  std::vector<AdamWParamState*> out;
  for (AdamWParamState& s : params_) {
    const Tensor grad = s.param->grad();
    if (!grad.defined()) continue;
    INFLLM_CHECK(grad.dtype() == DType::f32 && grad.shape() == s.param->shape() &&
                     grad.device() == device_ && grad.is_contiguous(),
                 where, ": the grad of '", s.name, "' is ", grad.str(), " (contiguous ",
                 grad.is_contiguous(), "); it must be contiguous f32 shaped and placed like the ",
                 "parameter ", s.param->str());
    INFLLM_CHECK(s.param->dtype() != DType::f32 || s.param->data_ptr() == s.master.data_ptr(),
                 where, ": parameter '", s.name,
                 "' now lives in other storage than when the optimizer was built; write new "
                 "values with AdamW::set_master (or copy into the parameter in place)");
    out.push_back(&s);
  }
  return out;
}

AdamWHyper adamw_hyper(const AdamWOptions& options, double lr, double grad_scale, int64_t step,
                       const char* who) {
  INFLLM_CHECK(std::isfinite(lr) && lr >= 0, who, ": lr=", lr, " must be finite and >= 0");
  INFLLM_CHECK(std::isfinite(grad_scale) && grad_scale >= 0, who, ": grad_scale=", grad_scale,
               " must be finite and >= 0 (skip steps whose grad norm is not finite)");
  AdamWHyper hp;
  hp.lr = float(lr);
  hp.beta1 = float(options.beta1);
  hp.beta2 = float(options.beta2);
  hp.eps = float(options.eps);
  hp.step = step;
  hp.grad_scale = float(grad_scale);
  return hp;
}

void AdamW::step(double lr, double grad_scale) {
  const AdamWHyper hp = adamw_hyper(options_, lr, grad_scale, steps_taken_ + 1, "AdamW::step");
  if (device_.is_cuda()) {
    step_cuda(hp);
  } else {
    step_cpu(hp);
  }
  ++steps_taken_;
}

void AdamW::step_cpu(const AdamWHyper& hp) {
  const std::vector<AdamWParamState*> with_grad = params_with_grad("AdamW::step");
  INFLLM_CHECK(!with_grad.empty(), "AdamW::step: no parameter has a grad; call backward() first");
  for (AdamWParamState* s : with_grad) {
    uint16_t* copy = s->param->dtype() == DType::bf16 ? bf16_bits(*s->param) : nullptr;
    adamw_update_cpu<float>(s->master.data<float>(), s->exp_avg.data<float>(),
                            s->exp_avg_sq.data<float>(), s->param->grad().data<float>(), copy,
                            s->param->numel(), hp, 1.0f, s->weight_decay);
  }
}

int AdamW::prepare_device_table(const char* where) {
  std::vector<AdamWTensor> table;
  for (AdamWParamState* s : params_with_grad(where)) {
    AdamWTensor t;
    t.param = s->master.data<float>();
    t.exp_avg = s->exp_avg.data<float>();
    t.exp_avg_sq = s->exp_avg_sq.data<float>();
    t.grad = s->param->grad().data_ptr();
    t.param_bf16 = s->param->dtype() == DType::bf16 ? bf16_bits(*s->param) : nullptr;
    t.n = s->param->numel();
    t.weight_decay = s->weight_decay;
    table.push_back(t);
  }
  if (table.empty()) return 0;
  const auto same = [](const AdamWTensor& a, const AdamWTensor& b) {
    return a.param == b.param && a.exp_avg == b.exp_avg && a.exp_avg_sq == b.exp_avg_sq &&
           a.grad == b.grad && a.param_bf16 == b.param_bf16 && a.n == b.n &&
           a.weight_decay == b.weight_decay;
  };
  if (table.size() == table_.size() && std::equal(table.begin(), table.end(), table_.begin(), same))
    return int(table_.size());
  // Something changed (usually fresh grads): plan and upload the small table again.
  table_chunks_ = adamw_plan_chunks(table.data(), int(table.size()));
  const size_t bytes = table.size() * sizeof(AdamWTensor);
  Tensor host = Tensor::empty({int64_t((bytes + 3) / 4)}, DType::i32, Device::cpu());
  std::memcpy(host.data_ptr(), table.data(), bytes);
  device_table_ = host.to(device_);
  const size_t workspace = grad_sum_squares_cuda_workspace_bytes(table_chunks_);
  if (!norm_workspace_.defined() || norm_workspace_.nbytes() < workspace)
    norm_workspace_ = scratch(workspace, device_);
  table_ = std::move(table);
  return int(table_.size());
}

void AdamW::step_cuda(const AdamWHyper& hp) {
  const int count = prepare_device_table("AdamW::step");
  INFLLM_CHECK(count > 0, "AdamW::step: no parameter has a grad; call backward() first");
  adamw_step_cuda(static_cast<const AdamWTensor*>(device_table_.data_ptr()), count, table_chunks_,
                  hp, device_stream(device_));
}

double AdamW::grad_norm_cuda() {
  const int count = prepare_device_table("AdamW::grad_norm");
  if (count == 0) return 0.0;
  if (!norm_result_.defined()) norm_result_ = Tensor::empty({1}, DType::f32, device_);
  grad_sum_squares_cuda(static_cast<const AdamWTensor*>(device_table_.data_ptr()), count,
                        table_chunks_, norm_workspace_.data_ptr(), norm_result_.data<float>(),
                        device_stream(device_));
  return std::sqrt(norm_result_.item());
}

double AdamW::grad_norm() {
  if (device_.is_cuda()) {
    return grad_norm_cuda();
  }
  double sum_squares = 0.0;
  for (AdamWParamState* s : params_with_grad("AdamW::grad_norm")) {
    sum_squares += grad_sum_squares_cpu<float>(s->param->grad().data<float>(), s->param->numel());
  }
  return std::sqrt(sum_squares);
}

void AdamW::zero_grad() {
  for (AdamWParamState& s : params_) {
    Tensor grad = s.param->grad();
    if (grad.defined()) ops::fill_(grad, 0.0);
  }
}

void AdamW::clear_grads() {
  for (AdamWParamState& s : params_) s.param->set_grad(Tensor());
}

void AdamW::set_steps_taken(int64_t steps) {
  INFLLM_CHECK(steps >= 0, "AdamW::set_steps_taken: steps=", steps, " must be >= 0");
  steps_taken_ = steps;
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const AdamWParamState& s : params_) {
    out.emplace_back(kStatePrefixes[0] + s.name, s.master);
    out.emplace_back(kStatePrefixes[1] + s.name, s.exp_avg);
    out.emplace_back(kStatePrefixes[2] + s.name, s.exp_avg_sq);
  }
  return out;
}

void AdamW::load_state(const std::map<std::string, Tensor>& state) {
  for (const auto& [key, value] : state) {
    for (const char* prefix : kStatePrefixes) {
      if (key.rfind(prefix, 0) != 0) continue;
      find(key.substr(std::strlen(prefix)), "AdamW::load_state");
    }
  }
  for (AdamWParamState& s : params_) {
    Tensor* slots[] = {&s.master, &s.exp_avg, &s.exp_avg_sq};
    for (int k = 0; k < 3; ++k) {
      const std::string key = kStatePrefixes[k] + s.name;
      const auto it = state.find(key);
      INFLLM_CHECK(it != state.end(), "AdamW::load_state: the state has no '", key,
                   "'; it was saved for a different model or by a different optimizer");
      load_into("AdamW::load_state", key, it->second, *slots[k]);
    }
    write_compute_copy(s);
  }
}

size_t AdamW::state_bytes() const {
  size_t bytes = 0;
  for (const AdamWParamState& s : params_) {
    bytes += s.exp_avg.nbytes() + s.exp_avg_sq.nbytes();
    if (s.master.data_ptr() != s.param->data_ptr()) bytes += s.master.nbytes();
  }
  return bytes;
}

void AdamW::set_master(const std::string& name, const Tensor& f32_values) {
  AdamWParamState& s = find(name, "AdamW::set_master");
  load_into("AdamW::set_master", name, f32_values, s.master);
  write_compute_copy(s);
}

}  // namespace infllm
