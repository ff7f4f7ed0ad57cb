// AdamW and gradient-norm kernels: the CPU reference against the update written out in f64 over
// several steps; the multi-tensor CUDA launch against the CPU reference on a list of odd-sized
// tensors (f32 and bf16 gradients, misaligned views, bf16 copies), and run to run.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "optim/adamw_kernels.h"
#include "tests/layers/kernel_test_support.h"

namespace infllm {
namespace {

using namespace kernel_test;

AdamWHyper hyper(int64_t step) {
  AdamWHyper hp;
  hp.lr = 3e-3f;
  hp.beta1 = 0.9f;
  hp.beta2 = 0.95f;
  hp.eps = 1e-8f;
  hp.step = step;
  hp.grad_scale = 0.7f;
  return hp;
}

TEST(AdamWKernels, CpuMatchesFormulaOverSteps) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed=" << seed);
  const int64_t n = 37;
  const float lr_scale = 0.5f, weight_decay = 0.1f;
  std::vector<double> p = random_normal(n, 0.02, seed), m(n, 0.0), v(n, 0.0);
  std::vector<float> pf = convert<float>(p), mf(n, 0.0f), vf(n, 0.0f);
  std::vector<uint16_t> p_bf16(n);
  for (int64_t step = 1; step <= 3; ++step) {
    const std::vector<double> g = random_normal(n, 1.0, seed + step);
    const AdamWHyper hp = hyper(step);
    const double lr = double(hp.lr) * lr_scale;
    for (int64_t i = 0; i < n; ++i) {
      const double gi = g[i] * double(hp.grad_scale);
      m[i] = double(hp.beta1) * m[i] + (1.0 - double(hp.beta1)) * gi;
      v[i] = double(hp.beta2) * v[i] + (1.0 - double(hp.beta2)) * gi * gi;
      const double m_hat = m[i] / (1.0 - std::pow(double(hp.beta1), double(step)));
      const double v_hat = v[i] / (1.0 - std::pow(double(hp.beta2), double(step)));
      p[i] = p[i] - lr * double(weight_decay) * p[i] -
             lr * m_hat / (std::sqrt(v_hat) + double(hp.eps));
    }
    adamw_update_cpu(pf.data(), mf.data(), vf.data(), convert<float>(g).data(), p_bf16.data(), n,
                     hp, lr_scale, weight_decay);
    EXPECT_LT(rel_error(convert<double>(pf), p), 1e-5) << "step " << step;
    EXPECT_LT(rel_error(convert<double>(mf), m), 1e-5) << "step " << step;
    EXPECT_LT(rel_error(convert<double>(vf), v), 1e-5) << "step " << step;
    EXPECT_LT(rel_error(from_bf16(p_bf16), p), 1e-2) << "step " << step;
  }
}

TEST(AdamWKernels, CpuSumOfSquares) {
  const std::vector<double> g = random_normal(1001, 1.0, fresh_seed());
  double ref = 0.0;
  for (double x : g) ref += x * x;
  EXPECT_NEAR(grad_sum_squares_cpu(convert<float>(g).data(), 1001) / ref, 1.0, 1e-6);
}

TEST(AdamWKernels, PlanRejectsMissingPointers) {
  AdamWTensor t;
  t.n = 4;
  EXPECT_THROW(adamw_plan_chunks(&t, 1), Error);
}

// One parameter tensor on the host (the f64 reference state) and on the device.
struct Param {
  int64_t n;
  bool grad_bf16;
  bool bf16_copy;
  int offset;  // elements past a 16-byte boundary: 1 and 3 force the scalar path
  float lr_scale, weight_decay;
  std::vector<double> p, m, v, g;
};

TEST(AdamWKernels, CudaMultiTensorMatchesCpuAndRepeatsBitwise) {
  INFLLM_REQUIRE_GPU();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed=" << seed);
  std::vector<Param> params = {
      {1, false, true, 0, 1.0f, 0.0f, {}, {}, {}, {}},
      {7, true, false, 0, 1.0f, 0.1f, {}, {}, {}, {}},
      {kAdamWChunk + 5, false, true, 0, 0.5f, 0.1f, {}, {}, {}, {}},
      {40000, true, true, 1, 1.0f, 0.1f, {}, {}, {}, {}},
      {100003, false, false, 3, 2.0f, 0.0f, {}, {}, {}, {}},
      {3 * kAdamWChunk, true, true, 0, 1.0f, 0.05f, {}, {}, {}, {}},
  };
  for (size_t k = 0; k < params.size(); ++k) {
    Param& q = params[k];
    q.p = random_normal(q.n, 0.02, seed + 10 * k);
    q.m = random_normal(q.n, 0.01, seed + 10 * k + 1);
    q.v = random_uniform(q.n, 0.0, 1e-3, seed + 10 * k + 2);
    q.g = random_normal(q.n, 1.0, seed + 10 * k + 3);
    if (q.grad_bf16) q.g = round_to_bf16(q.g);
    q.p = convert<double>(convert<float>(q.p));  // the device starts from the f32 values
    q.m = convert<double>(convert<float>(q.m));
    q.v = convert<double>(convert<float>(q.v));
    q.g = convert<double>(convert<float>(q.g));
  }
  // Device buffers, each with room for the misaligning offset.
  std::vector<std::unique_ptr<DeviceBuffer<float>>> fbufs;
  std::vector<std::unique_ptr<DeviceBuffer<uint16_t>>> hbufs;
  auto f32_on_device = [&](const std::vector<double>& host, int offset) {
    std::vector<float> padded(host.size() + offset, 0.0f);
    for (size_t i = 0; i < host.size(); ++i) padded[offset + i] = float(host[i]);
    fbufs.push_back(std::make_unique<DeviceBuffer<float>>(padded));
    return fbufs.back()->get() + offset;
  };
  auto bf16_on_device = [&](const std::vector<double>& host, int offset) {
    std::vector<uint16_t> padded(host.size() + offset, 0);
    const std::vector<uint16_t> bits = to_bf16(host);
    std::copy(bits.begin(), bits.end(), padded.begin() + offset);
    hbufs.push_back(std::make_unique<DeviceBuffer<uint16_t>>(padded));
    return hbufs.back()->get() + offset;
  };
  std::vector<AdamWTensor> tensors(params.size());
  std::vector<uint16_t*> copies(params.size(), nullptr);
  for (size_t k = 0; k < params.size(); ++k) {
    const Param& q = params[k];
    AdamWTensor& t = tensors[k];
    t.param = f32_on_device(q.p, q.offset);
    t.exp_avg = f32_on_device(q.m, q.offset);
    t.exp_avg_sq = f32_on_device(q.v, q.offset);
    t.grad = q.grad_bf16 ? static_cast<const void*>(bf16_on_device(q.g, q.offset))
                         : static_cast<const void*>(f32_on_device(q.g, q.offset));
    if (q.bf16_copy) copies[k] = t.param_bf16 = bf16_on_device(std::vector<double>(q.n), q.offset);
    t.n = q.n;
    t.lr_scale = q.lr_scale;
    t.weight_decay = q.weight_decay;
    t.grad_is_bf16 = q.grad_bf16;
  }
  const int64_t chunks = adamw_plan_chunks(tensors.data(), int(tensors.size()));
  DeviceBuffer<unsigned char> device_tensors(tensors.size() * sizeof(AdamWTensor));
  testing::copy_to_device(device_tensors.get(), tensors.data(),
                          tensors.size() * sizeof(AdamWTensor));
  const auto* dev = reinterpret_cast<const AdamWTensor*>(device_tensors.get());

  // The gradient norm first (the gradients do not change), twice.
  DeviceBuffer<unsigned char> workspace(grad_sum_squares_cuda_workspace_bytes(chunks));
  DeviceBuffer<float> sum_squares(1);
  double sum_ref = 0.0;
  for (const Param& q : params) sum_ref += grad_sum_squares_cpu(q.g.data(), q.n);
  grad_sum_squares_cuda(dev, int(tensors.size()), chunks, workspace.get(), sum_squares.get(),
                        nullptr);
  const float first_sum = sum_squares.download()[0];
  EXPECT_NEAR(double(first_sum) / sum_ref, 1.0, 1e-5);
  sum_squares.poison();
  grad_sum_squares_cuda(dev, int(tensors.size()), chunks, workspace.get(), sum_squares.get(),
                        nullptr);
  EXPECT_EQ(sum_squares.download()[0], first_sum);

  // Three steps on both sides with the same gradients.
  for (int64_t step = 1; step <= 3; ++step) {
    const AdamWHyper hp = hyper(step);
    adamw_step_cuda(dev, int(tensors.size()), chunks, hp, nullptr);
    for (Param& q : params) {
      std::vector<uint16_t> unused(q.n);
      adamw_update_cpu(q.p.data(), q.m.data(), q.v.data(), q.g.data(), unused.data(), q.n, hp,
                       q.lr_scale, q.weight_decay);
    }
  }
  testing::device_synchronize();
  for (size_t k = 0; k < params.size(); ++k) {
    const Param& q = params[k];
    SCOPED_TRACE(::testing::Message() << "tensor " << k << " n=" << q.n);
    auto read_f32 = [&](float* p) {
      std::vector<float> host(q.n);
      testing::copy_to_host(host.data(), p, q.n * sizeof(float));
      return convert<double>(host);
    };
    EXPECT_LT(rel_error(read_f32(tensors[k].param), q.p), 1e-5);
    EXPECT_LT(rel_error(read_f32(tensors[k].exp_avg), q.m), 1e-5);
    EXPECT_LT(rel_error(read_f32(tensors[k].exp_avg_sq), q.v), 1e-5);
    if (copies[k]) {
      std::vector<uint16_t> host(q.n);
      testing::copy_to_host(host.data(), copies[k], q.n * 2);
      EXPECT_LT(rel_error(from_bf16(host), q.p), 1e-2);
    }
  }
}

}  // namespace
}  // namespace infllm
