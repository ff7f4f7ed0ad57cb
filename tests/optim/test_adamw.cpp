// AdamW over named parameters: the CPU path against the update written out in f64 over several
// steps (decay and no-decay parameters, grad_scale, bf16 compute copies), grad handling,
// checkpoint state round trips (bitwise), set_master, the global grad norm, error cases, and
// bf16 parameters on a GPU against the CPU f32 path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/ops.h"
#include "optim/adamw.h"
#include "tests/test_util.h"

namespace infllm {
namespace {

using namespace infllm::testing;

struct ParamSpec {
  std::string name;
  Shape shape;
  DType dtype;
};

// Shaped like pieces of a model; the norm and embedding names fall in the no-decay group, the
// MLP weight spans two chunks of the multi-tensor launch.
const std::vector<ParamSpec> kSpecs = {
    {"blocks.0.attention.wqkv.weight", {7, 5}, DType::f32},
    {"blocks.0.attention_norm.weight", {5}, DType::f32},
    {"embedding.weight", {4, 3}, DType::f32},
    {"blocks.0.mlp.w1.weight", {300, 70}, DType::f32},
    {"lm_head.weight", {3, 6}, DType::bf16},
};

// The parameter slots of a stand-in model (their addresses stay fixed, as a Module's do).
struct Params {
  std::vector<Tensor> tensors;
  Params(const std::vector<ParamSpec>& specs, Device device, bool swap_precision = false) {
    tensors.reserve(specs.size());
    for (const ParamSpec& spec : specs) {
      DType dtype = spec.dtype;
      if (swap_precision) dtype = dtype == DType::f32 ? DType::bf16 : DType::f32;
      tensors.push_back(
          ops::cast(random_normal(spec.shape, DType::f32, Device::cpu(), 0.5), dtype).to(device));
      tensors.back().set_requires_grad(true);
    }
  }
  std::vector<NamedParameter> named() {
    std::vector<NamedParameter> out;
    for (size_t i = 0; i < tensors.size(); ++i) out.emplace_back(kSpecs[i].name, &tensors[i]);
    return out;
  }
};

AdamWOptions options() {
  AdamWOptions o;
  o.lr = 1e-2;
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.eps = 1e-8;
  o.weight_decay = 0.5;  // large, so a decay applied to the wrong group shows
  return o;
}

std::map<std::string, Tensor> state_map(const AdamW& opt) {
  std::map<std::string, Tensor> out;
  for (const auto& [key, value] : opt.state()) out[key] = value;
  return out;
}

// A host copy, as a checkpoint holds it.
std::map<std::string, Tensor> state_copy(const AdamW& opt) {
  std::map<std::string, Tensor> out;
  for (const auto& [key, value] : opt.state()) out[key] = value.to(Device::cpu()).clone();
  return out;
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const Tensor host = t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const uint8_t*>(host.data_ptr());
  return std::vector<uint8_t>(p, p + host.nbytes());
}

// The f64 reference state of one parameter and its update in PyTorch's textbook form.
struct Reference {
  std::vector<double> p, m, v;
  double weight_decay;

  void step(const std::vector<double>& grad, double lr, double grad_scale, int64_t t,
            const AdamWOptions& o) {
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = grad[i] * grad_scale;
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
      const double m_hat = m[i] / (1 - std::pow(o.beta1, double(t)));
      const double v_hat = v[i] / (1 - std::pow(o.beta2, double(t)));
      p[i] = p[i] - lr * weight_decay * p[i] - lr * m_hat / (std::sqrt(v_hat) + o.eps);
    }
  }
};

bool no_decay(const std::string& name) {
  return name.find("norm") != std::string::npos || name.find("embedding") != std::string::npos;
}

TEST(AdamW, CpuMatchesF64ReferenceOverSteps) {
  Params params(kSpecs, Device::cpu());
  const AdamWOptions o = options();
  AdamW opt(params.named(), o);
  std::vector<Reference> refs;
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    const size_t n = size_t(params.tensors[i].numel());
    refs.push_back({as_f64(params.tensors[i]), std::vector<double>(n, 0.0),
                    std::vector<double>(n, 0.0), no_decay(kSpecs[i].name) ? 0.0 : o.weight_decay});
  }
  const double lrs[] = {1e-2, 5e-3, 2e-3};
  const double grad_scales[] = {1.0, 0.6, 0.25};
  for (int k = 0; k < 3; ++k) {
    for (size_t i = 0; i < kSpecs.size(); ++i) {
      const Tensor grad = random_normal(kSpecs[i].shape);
      params.tensors[i].set_grad(grad);
      refs[i].step(as_f64(grad), lrs[k], grad_scales[k], k + 1, o);
    }
    opt.step(lrs[k], grad_scales[k]);
    EXPECT_EQ(opt.steps_taken(), k + 1);
    std::map<std::string, Tensor> state = state_map(opt);
    for (size_t i = 0; i < kSpecs.size(); ++i) {
      const std::string& name = kSpecs[i].name;
      SCOPED_TRACE(name + " after step " + std::to_string(k + 1));
      EXPECT_LT(rel_error(state.at("master/" + name), refs[i].p), 1e-5);
      EXPECT_LT(rel_error(state.at("exp_avg/" + name), refs[i].m), 1e-5);
      EXPECT_LT(rel_error(state.at("exp_avg_sq/" + name), refs[i].v), 1e-5);
      // The compute copy is the master rounded to the parameter's dtype.
      EXPECT_EQ(bytes_of(params.tensors[i]),
                bytes_of(ops::cast(state.at("master/" + name), kSpecs[i].dtype)));
      EXPECT_LT(rel_error(params.tensors[i], refs[i].p),
                kSpecs[i].dtype == DType::f32 ? 1e-5 : 1e-2);
    }
  }
}

TEST(AdamW, SkipsParametersWithoutGrad) {
  Params params(kSpecs, Device::cpu());
  AdamW opt(params.named(), options());
  const std::vector<uint8_t> untouched = bytes_of(params.tensors[1]);
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    if (i != 1) params.tensors[i].set_grad(random_normal(kSpecs[i].shape));
  }
  opt.step(1e-2);
  EXPECT_EQ(bytes_of(params.tensors[1]), untouched);
  std::map<std::string, Tensor> state = state_map(opt);
  EXPECT_EQ(as_f64(state.at("exp_avg/" + kSpecs[1].name)),
            std::vector<double>(size_t(params.tensors[1].numel()), 0.0));
  EXPECT_NE(as_f64(state.at("exp_avg/" + kSpecs[0].name)),
            std::vector<double>(size_t(params.tensors[0].numel()), 0.0));
  opt.clear_grads();
  EXPECT_THROW(opt.step(1e-2), Error);  // no grads at all: backward was forgotten
  EXPECT_EQ(opt.steps_taken(), 1);
}

TEST(AdamW, ZeroGradKeepsStorageClearGradsFreesIt) {
  Params params(kSpecs, Device::cpu());
  AdamW opt(params.named(), options());
  params.tensors[0].set_grad(random_normal(kSpecs[0].shape));
  const void* storage = params.tensors[0].grad().data_ptr();
  opt.zero_grad();
  ASSERT_TRUE(params.tensors[0].grad().defined());
  EXPECT_EQ(params.tensors[0].grad().data_ptr(), storage);
  EXPECT_EQ(as_f64(params.tensors[0].grad()),
            std::vector<double>(size_t(params.tensors[0].numel()), 0.0));
  EXPECT_FALSE(params.tensors[1].grad().defined());  // undefined grads stay undefined
  opt.clear_grads();
  for (const Tensor& t : params.tensors) EXPECT_FALSE(t.grad().defined());
}

// Runs `steps` steps of `opt` on the grads in `grads` (one list per step, cloned per use).
void run_steps(AdamW& opt, Params& params, const std::vector<std::vector<Tensor>>& grads) {
  for (const std::vector<Tensor>& step_grads : grads) {
    for (size_t i = 0; i < step_grads.size(); ++i)
      params.tensors[i].set_grad(step_grads[i].to(params.tensors[i].device()).clone());
    opt.step(3e-3, 0.8);
  }
}

std::vector<std::vector<Tensor>> random_grads(int steps) {
  std::vector<std::vector<Tensor>> out(static_cast<size_t>(steps));
  for (auto& step_grads : out) {
    for (const ParamSpec& spec : kSpecs) step_grads.push_back(random_normal(spec.shape));
  }
  return out;
}

TEST(AdamW, StateRoundTripContinuesBitwise) {
  Params a(kSpecs, Device::cpu());
  AdamW opt_a(a.named(), options());
  run_steps(opt_a, a, random_grads(2));
  const std::map<std::string, Tensor> saved = state_copy(opt_a);

  Params b(kSpecs, Device::cpu());  // other initial values, overwritten by the load
  AdamW opt_b(b.named(), options());
  opt_b.load_state(saved);
  opt_b.set_steps_taken(opt_a.steps_taken());
  for (size_t i = 0; i < kSpecs.size(); ++i)
    EXPECT_EQ(bytes_of(a.tensors[i]), bytes_of(b.tensors[i])) << kSpecs[i].name;

  const std::vector<std::vector<Tensor>> more = random_grads(2);
  run_steps(opt_a, a, more);
  run_steps(opt_b, b, more);
  EXPECT_EQ(opt_a.steps_taken(), opt_b.steps_taken());
  std::map<std::string, Tensor> state_b = state_map(opt_b);
  for (const auto& [key, value] : opt_a.state())
    EXPECT_EQ(bytes_of(value), bytes_of(state_b.at(key))) << key;
  for (size_t i = 0; i < kSpecs.size(); ++i)
    EXPECT_EQ(bytes_of(a.tensors[i]), bytes_of(b.tensors[i])) << kSpecs[i].name;
}

TEST(AdamW, LoadStateRejectsMismatches) {
  Params params(kSpecs, Device::cpu());
  AdamW opt(params.named(), options());
  std::map<std::string, Tensor> saved = state_copy(opt);

  std::map<std::string, Tensor> missing = saved;
  missing.erase("exp_avg_sq/" + kSpecs[2].name);
  EXPECT_THROW(opt.load_state(missing), Error);

  std::map<std::string, Tensor> extra = saved;
  extra["master/blocks.9.unknown.weight"] = random_normal({2});
  EXPECT_THROW(opt.load_state(extra), Error);

  std::map<std::string, Tensor> wrong_shape = saved;
  wrong_shape["exp_avg/" + kSpecs[0].name] = random_normal({5, 7});
  EXPECT_THROW(opt.load_state(wrong_shape), Error);

  std::map<std::string, Tensor> wrong_dtype = saved;
  wrong_dtype["master/" + kSpecs[0].name] = random_normal(kSpecs[0].shape, DType::f64);
  EXPECT_THROW(opt.load_state(wrong_dtype), Error);

  saved["step"] = random_normal({1});  // keys without a state prefix are someone else's
  EXPECT_NO_THROW(opt.load_state(saved));
}

TEST(AdamW, SetMasterWritesMasterAndComputeCopy) {
  Params params(kSpecs, Device::cpu());
  AdamW opt(params.named(), options());
  for (size_t i : {size_t(0), size_t(4)}) {  // an f32 and a bf16 parameter
    const Tensor values = random_normal(kSpecs[i].shape);
    opt.set_master(kSpecs[i].name, values);
    EXPECT_EQ(bytes_of(state_map(opt).at("master/" + kSpecs[i].name)), bytes_of(values));
    EXPECT_EQ(bytes_of(params.tensors[i]), bytes_of(ops::cast(values, kSpecs[i].dtype)));
  }
  EXPECT_THROW(opt.set_master("no.such.weight", random_normal({2})), Error);
  EXPECT_THROW(opt.set_master(kSpecs[0].name, random_normal({5, 7})), Error);
  EXPECT_THROW(opt.set_master(kSpecs[0].name, random_normal(kSpecs[0].shape, DType::bf16)), Error);
}

TEST(AdamW, GradNormMatchesF64) {
  Params params(kSpecs, Device::cpu());
  AdamW opt(params.named(), options());
  EXPECT_EQ(opt.grad_norm(), 0.0);
  double sum_squares = 0;
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    if (i == 2) continue;  // an unused parameter counts nothing
    const Tensor grad = random_normal(kSpecs[i].shape, DType::f32, Device::cpu(), 3.0);
    params.tensors[i].set_grad(grad);
    for (double g : as_f64(grad)) sum_squares += g * g;
  }
  EXPECT_LT(std::abs(opt.grad_norm() - std::sqrt(sum_squares)) / std::sqrt(sum_squares), 1e-5);
}

TEST(AdamW, RejectsBadInput) {
  Params params(kSpecs, Device::cpu());
  EXPECT_THROW(AdamW({}, options()), Error);
  std::vector<NamedParameter> twice = params.named();
  twice.push_back(twice.front());
  EXPECT_THROW(AdamW(twice, options()), Error);
  Tensor f64_param = random_normal({3}, DType::f64);
  EXPECT_THROW(AdamW({{"w", &f64_param}}, options()), Error);
  AdamWOptions bad = options();
  bad.beta1 = 1.0;
  EXPECT_THROW(AdamW(params.named(), bad), Error);

  AdamW opt(params.named(), options());
  params.tensors[0].set_grad(random_normal(kSpecs[0].shape, DType::bf16));
  EXPECT_THROW(opt.step(1e-3), Error);  // grads must be f32
  params.tensors[0].set_grad(random_normal({35}));
  EXPECT_THROW(opt.step(1e-3), Error);  // and shaped like the parameter
  params.tensors[0].set_grad(random_normal(kSpecs[0].shape));
  EXPECT_THROW(opt.step(1e-3, NAN), Error);
  EXPECT_THROW(opt.step(-1.0), Error);
}

// bf16 parameters on the GPU (and one f32) against the CPU path with f32 parameters, from the
// same f32 masters with the same grads, clipped by each side's own grad norm. Step 2 writes the
// grads into the existing grad storage (the launch table is reused), steps 1 and 3 bring fresh
// grads (the table is uploaded again).
TEST(AdamW, CudaBf16MatchesCpuF32Path) {
  INFLLM_REQUIRE_GPU();
  const Device gpu = Device::cuda();
  std::vector<ParamSpec> cpu_specs = kSpecs;
  for (ParamSpec& spec : cpu_specs) spec.dtype = DType::f32;
  Params cpu_params(cpu_specs, Device::cpu());
  Params gpu_params(kSpecs, gpu, /*swap_precision=*/true);
  AdamW cpu_opt(cpu_params.named(), options());
  AdamW gpu_opt(gpu_params.named(), options());
  for (size_t i = 0; i < kSpecs.size(); ++i)
    gpu_opt.set_master(kSpecs[i].name, cpu_params.tensors[i]);

  const double clip = 50.0;  // below the norm of these grads, so clipping acts
  for (int k = 0; k < 3; ++k) {
    for (size_t i = 0; i < kSpecs.size(); ++i) {
      const Tensor grad = random_normal(kSpecs[i].shape);
      cpu_params.tensors[i].set_grad(grad);
      if (k == 1) {
        Tensor existing = gpu_params.tensors[i].grad();
        copy_into(grad, existing);
      } else {
        gpu_params.tensors[i].set_grad(grad.to(gpu));
      }
    }
    const double cpu_norm = cpu_opt.grad_norm();
    const double gpu_norm = gpu_opt.grad_norm();
    EXPECT_LT(std::abs(gpu_norm - cpu_norm) / cpu_norm, 1e-5) << "step " << k + 1;
    cpu_opt.step(1e-2, std::min(1.0, clip / cpu_norm));
    gpu_opt.step(1e-2, std::min(1.0, clip / gpu_norm));

    std::map<std::string, Tensor> gpu_state = state_map(gpu_opt);
    for (const auto& [key, value] : cpu_opt.state()) {
      EXPECT_TRUE(gpu_state.at(key).device() == gpu) << key;
      EXPECT_LT(rel_error(gpu_state.at(key), as_f64(value)), 1e-5) << key << " step " << k + 1;
    }
    for (size_t i = 0; i < kSpecs.size(); ++i) {
      EXPECT_LT(rel_error(gpu_params.tensors[i], as_f64(cpu_params.tensors[i])),
                gpu_params.tensors[i].dtype() == DType::f32 ? 1e-5 : 1e-2)
          << kSpecs[i].name << " step " << k + 1;
    }
  }
}

}  // namespace
}  // namespace infllm
