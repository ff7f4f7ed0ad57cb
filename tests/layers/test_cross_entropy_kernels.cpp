// Fused cross-entropy kernels: the CPU reference against log(sum(exp)) written out and finite
// differences; the CUDA kernel against the CPU reference at real vocabulary sizes, odd V
// (misaligned rows), ignored rows, in place, and run to run.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "layers/cross_entropy_kernels.h"
#include "tests/layers/kernel_test_support.h"

namespace infllm {
namespace {

using namespace kernel_test;

// Targets in [0, V), with every `ignore_every`-th row (if > 0) set to -1.
std::vector<int32_t> random_targets(int64_t N, int64_t V, uint64_t seed, int ignore_every) {
  const std::vector<double> u = random_uniform(N, 0.0, double(V), seed);
  std::vector<int32_t> targets(N);
  for (int64_t n = 0; n < N; ++n) {
    targets[n] = ignore_every > 0 && n % ignore_every == 1 ? -1 : int32_t(u[n]);
  }
  return targets;
}

TEST(CrossEntropyKernels, CpuMatchesFormula) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed=" << seed);
  const int64_t N = 6, V = 37;
  const double scale = 0.25;
  const std::vector<double> logits = random_normal(N * V, 3.0, seed);
  const std::vector<int32_t> targets = random_targets(N, V, seed + 1, 4);
  std::vector<double> loss_ref(N, 0.0), grad_ref(N * V, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    double sum = 0.0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[n * V + v]);
    loss_ref[n] = std::log(sum) - logits[n * V + targets[n]];
    for (int64_t v = 0; v < V; ++v) {
      grad_ref[n * V + v] = (std::exp(logits[n * V + v]) / sum - (v == targets[n])) * scale;
    }
  }
  std::vector<float> loss(N), grad(N * V);
  cross_entropy_forward_backward_cpu(convert<float>(logits).data(), targets.data(), loss.data(),
                                     grad.data(), N, V, scale);
  EXPECT_LT(rel_error(convert<double>(loss), loss_ref), 1e-6);
  EXPECT_LT(rel_error(convert<double>(grad), grad_ref), 1e-6);
  EXPECT_EQ(loss[1], 0.0f);  // row 1 is ignored

  // In place over the logits, in double.
  std::vector<double> lossd(N), inplace = logits;
  cross_entropy_forward_backward_cpu(inplace.data(), targets.data(), lossd.data(), inplace.data(),
                                     N, V, scale);
  EXPECT_LT(rel_error(lossd, loss_ref), 1e-13);
  EXPECT_LT(rel_error(inplace, grad_ref), 1e-13);
}

TEST(CrossEntropyKernels, CpuGradientMatchesFiniteDifferences) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed=" << seed);
  const int64_t N = 4, V = 9;
  const double scale = 1.0 / 3.0;
  std::vector<double> logits = random_normal(N * V, 2.0, seed);
  const std::vector<int32_t> targets = random_targets(N, V, seed + 1, 3);
  auto loss = [&] {
    std::vector<double> per_row(N);
    cross_entropy_forward_backward_cpu<double>(logits.data(), targets.data(), per_row.data(),
                                               nullptr, N, V, scale);
    double total = 0.0;
    for (double l : per_row) total += l * scale;
    return total;
  };
  std::vector<double> per_row(N), grad(N * V);
  cross_entropy_forward_backward_cpu(logits.data(), targets.data(), per_row.data(), grad.data(), N,
                                     V, scale);
  EXPECT_LT(rel_error(grad, finite_difference_gradient(logits, loss)), 1e-7);
}

TEST(CrossEntropyKernels, RejectsTargetOutsideVocabulary) {
  std::vector<float> logits(6), loss(2);
  const std::vector<int32_t> targets = {0, 3};
  EXPECT_THROW(cross_entropy_forward_backward_cpu(logits.data(), targets.data(), loss.data(),
                                                  logits.data(), 2, 3, 1.0),
               Error);
}

// V = 32000 and 50304: aligned rows; 50257: odd, so rows start misaligned; 110017: longer than
// the shared-memory row cache (pass 2 re-reads the logits); 3 and 13: fewer elements than one
// vector plus edges.
TEST(CrossEntropyKernels, CudaMatchesCpuAndRepeatsBitwise) {
  INFLLM_REQUIRE_GPU();
  struct Case {
    int64_t N, V;
  };
  for (const Case& c :
       {Case{7, 32000}, Case{5, 50257}, Case{3, 50304}, Case{2, 110017}, Case{9, 3}, Case{6, 13}}) {
    for (int mode = 0; mode < 3; ++mode) {  // 0: separate dlogits, 1: in place, 2: misaligned
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE(::testing::Message()
                   << "N=" << c.N << " V=" << c.V << " mode=" << mode << " seed=" << seed);
      const int64_t N = c.N, V = c.V;
      const float scale = 1.0f / float(N);
      const std::vector<double> logits = round_to_bf16(random_normal(N * V, 2.0, seed));
      const std::vector<int32_t> targets = random_targets(N, V, seed + 1, 3);
      std::vector<double> loss_ref(N), grad_ref(N * V);
      cross_entropy_forward_backward_cpu(logits.data(), targets.data(), loss_ref.data(),
                                         grad_ref.data(), N, V, double(scale));

      DeviceBuffer<uint16_t> logits_dev(to_bf16(logits)), grad(N * V + 1);
      DeviceBuffer<int32_t> targets_dev(targets);
      DeviceBuffer<float> loss(N);
      // Mode 2 shifts dlogits by one element from logits' alignment: the scalar path.
      uint16_t* dlogits = mode == 1 ? logits_dev.get() : grad.get() + (mode == 2 ? 1 : 0);
      std::vector<float> first_loss;
      std::vector<double> first_grad;
      for (int run = 0; run < 2; ++run) {
        if (mode == 1) logits_dev.upload(to_bf16(logits));
        grad.poison();
        loss.poison();
        cross_entropy_forward_backward_cuda(logits_dev.get(), targets_dev.get(), loss.get(),
                                            dlogits, N, V, scale, nullptr);
        std::vector<uint16_t> all = (mode == 1 ? logits_dev : grad).download();
        const size_t skip = mode == 2 ? 1 : 0;
        const std::vector<double> grad_out =
            from_bf16(std::vector<uint16_t>(all.begin() + skip, all.begin() + skip + N * V));
        if (run == 0) {
          first_loss = loss.download();
          first_grad = grad_out;
          EXPECT_LT(rel_error(convert<double>(first_loss), loss_ref), 1e-5);
          EXPECT_LT(rel_error(grad_out, grad_ref), 1e-2);
        } else {
          EXPECT_EQ(loss.download(), first_loss);
          EXPECT_EQ(grad_out, first_grad);
        }
      }
    }
  }
}

TEST(CrossEntropyKernels, CudaLossOnly) {
  INFLLM_REQUIRE_GPU();
  const int64_t N = 4, V = 1001;
  const std::vector<double> logits = round_to_bf16(random_normal(N * V, 1.0, fresh_seed()));
  const std::vector<int32_t> targets = random_targets(N, V, fresh_seed(), 0);
  std::vector<double> loss_ref(N);
  cross_entropy_forward_backward_cpu<double>(logits.data(), targets.data(), loss_ref.data(),
                                             nullptr, N, V, 1.0);
  DeviceBuffer<uint16_t> logits_dev(to_bf16(logits));
  DeviceBuffer<int32_t> targets_dev(targets);
  DeviceBuffer<float> loss(N);
  loss.poison();
  cross_entropy_forward_backward_cuda(logits_dev.get(), targets_dev.get(), loss.get(), nullptr, N,
                                      V, 1.0f, nullptr);
  EXPECT_LT(rel_error(convert<double>(loss.download()), loss_ref), 1e-5);
  EXPECT_EQ(from_bf16(logits_dev.download()), logits);  // untouched
}

}  // namespace
}  // namespace infllm
