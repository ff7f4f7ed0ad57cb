// SwiGLU kernels on the fused [N, 2F] gate_up layout: the CPU reference against the plain
// formula and finite differences; the CUDA kernels against the CPU reference.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "layers/swiglu_kernels.h"
#include "tests/layers/kernel_test_support.h"

namespace infllm {
namespace {

using namespace kernel_test;

// h = silu(gate) * up with gate = gate_up[n, :F], up = gate_up[n, F:].
std::vector<double> formula(const std::vector<double>& gate_up, int64_t N, int64_t F) {
  std::vector<double> h(N * F);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t f = 0; f < F; ++f) {
      const double g = gate_up[n * 2 * F + f];
      h[n * F + f] = g / (1.0 + std::exp(-g)) * gate_up[n * 2 * F + F + f];
    }
  return h;
}

TEST(SwigluKernels, CpuForwardMatchesFormula) {
  for (auto [N, F] : {std::pair<int64_t, int64_t>{1, 1}, {3, 13}, {4, 256}}) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(::testing::Message() << "N=" << N << " F=" << F << " seed=" << seed);
    const std::vector<double> gate_up = random_normal(N * 2 * F, 2.0, seed);
    const std::vector<double> ref = formula(gate_up, N, F);
    std::vector<float> h(N * F);
    swiglu_forward_cpu(convert<float>(gate_up).data(), h.data(), N, F);
    EXPECT_LT(rel_error(convert<double>(h), ref), 1e-6);
    std::vector<double> hd(N * F);
    swiglu_forward_cpu(gate_up.data(), hd.data(), N, F);
    EXPECT_LT(rel_error(hd, ref), 1e-14);
  }
}

TEST(SwigluKernels, CpuBackwardMatchesFiniteDifferences) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed=" << seed);
  const int64_t N = 3, F = 7;
  std::vector<double> gate_up = random_normal(N * 2 * F, 2.0, seed);
  const std::vector<double> dh = random_normal(N * F, 1.0, seed + 1);
  auto loss = [&] {
    std::vector<double> h(N * F);
    swiglu_forward_cpu(gate_up.data(), h.data(), N, F);
    return dot(h, dh);
  };
  std::vector<double> dgate_up(gate_up.size());
  swiglu_backward_cpu(dh.data(), gate_up.data(), dgate_up.data(), N, F);
  EXPECT_LT(rel_error(dgate_up, finite_difference_gradient(gate_up, loss)), 1e-7);
}

TEST(SwigluKernels, RejectsEmptyShapes) {
  std::vector<float> buf(2);
  EXPECT_THROW(swiglu_forward_cpu(buf.data(), buf.data(), 1, 0), Error);
}

TEST(SwigluKernels, CudaMatchesCpu) {
  INFLLM_REQUIRE_GPU();
  // F = 2816 and 64 take the 16-byte path, 13 and 1 the scalar one.
  for (auto [N, F] : {std::pair<int64_t, int64_t>{37, 2816}, {1000, 64}, {5, 13}, {2, 1}}) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(::testing::Message() << "N=" << N << " F=" << F << " seed=" << seed);
    const std::vector<double> gate_up = round_to_bf16(random_normal(N * 2 * F, 2.0, seed));
    const std::vector<double> dh = round_to_bf16(random_normal(N * F, 1.0, seed + 1));
    std::vector<double> h_ref(N * F), dgate_up_ref(N * 2 * F);
    swiglu_forward_cpu(gate_up.data(), h_ref.data(), N, F);
    swiglu_backward_cpu(dh.data(), gate_up.data(), dgate_up_ref.data(), N, F);

    DeviceBuffer<uint16_t> gu(to_bf16(gate_up)), dh_dev(to_bf16(dh)), h(N * F), dgu(N * 2 * F);
    h.poison();
    dgu.poison();
    swiglu_forward_cuda(gu.get(), h.get(), N, F, nullptr);
    EXPECT_LT(rel_error(from_bf16(h.download()), h_ref), 1e-2);
    swiglu_backward_cuda(dh_dev.get(), gu.get(), dgu.get(), N, F, nullptr);
    EXPECT_LT(rel_error(from_bf16(dgu.download()), dgate_up_ref), 1e-2);
    // In place: the gradient overwrites gate_up.
    swiglu_backward_cuda(dh_dev.get(), gu.get(), gu.get(), N, F, nullptr);
    EXPECT_LT(rel_error(from_bf16(gu.download()), dgate_up_ref), 1e-2);
  }
}

}  // namespace
}  // namespace infllm
