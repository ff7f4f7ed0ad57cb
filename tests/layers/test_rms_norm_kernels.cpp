// RMSNorm kernels: the CPU reference against the plain f64 formula and finite differences; the
// CUDA kernels against the CPU reference on the same bf16 inputs, and run to run.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "layers/rms_norm_kernels.h"
#include "tests/layers/kernel_test_support.h"

namespace infllm {
namespace {

using namespace kernel_test;

constexpr double kEps = 1e-5;

struct Shape {
  int64_t N, C;
};
// Odd widths (not multiples of 8 or 32), a single row, and a model-sized row.
const Shape kShapes[] = {{1, 7}, {5, 33}, {3, 1024}, {17, 100}};

struct Inputs {
  std::vector<double> x, residual, w, dy, dsum;
};

Inputs make_inputs(int64_t N, int64_t C, uint64_t seed) {
  return {random_normal(N * C, 1.0, seed), random_normal(N * C, 1.0, seed + 1),
          random_uniform(C, 0.5, 1.5, seed + 2), random_normal(N * C, 1.0, seed + 3),
          random_normal(N * C, 1.0, seed + 4)};
}

// y = x / sqrt(mean(x^2) + eps) * w, written out plainly.
std::vector<double> formula(const std::vector<double>& x, const std::vector<double>& w, int64_t N,
                            int64_t C, std::vector<double>* rstd = nullptr) {
  std::vector<double> y(N * C);
  for (int64_t n = 0; n < N; ++n) {
    double ms = 0.0;
    for (int64_t c = 0; c < C; ++c) ms += x[n * C + c] * x[n * C + c] / double(C);
    if (rstd) rstd->push_back(1.0 / std::sqrt(ms + kEps));
    for (int64_t c = 0; c < C; ++c) y[n * C + c] = x[n * C + c] / std::sqrt(ms + kEps) * w[c];
  }
  return y;
}

TEST(RmsNormKernels, CpuForwardMatchesFormula) {
  for (const Shape& s : kShapes) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(::testing::Message() << "N=" << s.N << " C=" << s.C << " seed=" << seed);
    const Inputs in = make_inputs(s.N, s.C, seed);
    std::vector<double> rstd_ref;
    const std::vector<double> y_ref = formula(in.x, in.w, s.N, s.C, &rstd_ref);

    std::vector<float> y(s.N * s.C), rstd(s.N);
    rms_norm_forward_cpu(convert<float>(in.x).data(), convert<float>(in.w).data(), y.data(),
                         rstd.data(), s.N, s.C, kEps);
    EXPECT_LT(rel_error(convert<double>(y), y_ref), 1e-5);
    EXPECT_LT(rel_error(convert<double>(rstd), rstd_ref), 1e-5);

    std::vector<double> yd(s.N * s.C), rstdd(s.N);
    rms_norm_forward_cpu(in.x.data(), in.w.data(), yd.data(), rstdd.data(), s.N, s.C, kEps);
    EXPECT_LT(rel_error(yd, y_ref), 1e-12);
  }
}

TEST(RmsNormKernels, CpuResidualForwardNormalizesTheSum) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed=" << seed);
  const int64_t N = 4, C = 45;
  const Inputs in = make_inputs(N, C, seed);
  std::vector<double> sum_ref(N * C);
  for (int64_t i = 0; i < N * C; ++i) sum_ref[i] = in.x[i] + in.residual[i];
  const std::vector<double> y_ref = formula(sum_ref, in.w, N, C);

  std::vector<double> sum(N * C), y(N * C), rstd(N);
  rms_norm_residual_forward_cpu(in.x.data(), in.residual.data(), sum.data(), in.w.data(), y.data(),
                                rstd.data(), N, C, kEps);
  EXPECT_LT(rel_error(sum, sum_ref), 1e-15);
  EXPECT_LT(rel_error(y, y_ref), 1e-12);
}

// loss = <y, dy> + <sum, dsum> with sum = x + residual and y = norm(sum): dx = d residual =
// backward(dy, sum, dsum) and dw = backward's dw. Without the residual, dsum = 0 and dx alone.
TEST(RmsNormKernels, CpuBackwardMatchesFiniteDifferences) {
  for (bool with_residual : {false, true}) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(::testing::Message() << "residual=" << with_residual << " seed=" << seed);
    const int64_t N = 3, C = 11;
    Inputs in = make_inputs(N, C, seed);
    if (!with_residual) std::fill(in.residual.begin(), in.residual.end(), 0.0);
    auto loss = [&] {
      std::vector<double> sum(N * C), y(N * C), rstd(N);
      rms_norm_residual_forward_cpu(in.x.data(), in.residual.data(), sum.data(), in.w.data(),
                                    y.data(), rstd.data(), N, C, kEps);
      return dot(y, in.dy) + (with_residual ? dot(sum, in.dsum) : 0.0);
    };
    std::vector<double> sum(N * C), y(N * C), rstd(N), dx(N * C), dw(C);
    rms_norm_residual_forward_cpu(in.x.data(), in.residual.data(), sum.data(), in.w.data(),
                                  y.data(), rstd.data(), N, C, kEps);
    rms_norm_backward_cpu(in.dy.data(), sum.data(), in.w.data(), rstd.data(),
                          with_residual ? in.dsum.data() : nullptr, dx.data(), dw.data(), N, C);
    EXPECT_LT(rel_error(dx, finite_difference_gradient(in.x, loss)), 1e-7);
    EXPECT_LT(rel_error(dw, finite_difference_gradient(in.w, loss)), 1e-7);
    if (with_residual) {
      EXPECT_LT(rel_error(dx, finite_difference_gradient(in.residual, loss)), 1e-7);
    }
  }
}

TEST(RmsNormKernels, CpuBackwardMayOverwriteDy) {
  const int64_t N = 6, C = 19;
  const Inputs in = make_inputs(N, C, fresh_seed());
  std::vector<double> y(N * C), rstd(N), dx(N * C), dw(C), dw_inplace(C);
  rms_norm_forward_cpu(in.x.data(), in.w.data(), y.data(), rstd.data(), N, C, kEps);
  rms_norm_backward_cpu(in.dy.data(), in.x.data(), in.w.data(), rstd.data(),
                        static_cast<const double*>(nullptr), dx.data(), dw.data(), N, C);
  std::vector<double> dy = in.dy;
  rms_norm_backward_cpu(dy.data(), in.x.data(), in.w.data(), rstd.data(),
                        static_cast<const double*>(nullptr), dy.data(), dw_inplace.data(), N, C);
  EXPECT_EQ(dy, dx);
  EXPECT_EQ(dw_inplace, dw);
}

TEST(RmsNormKernels, RejectsEmptyShapes) {
  std::vector<float> buf(4);
  EXPECT_THROW(rms_norm_forward_cpu(buf.data(), buf.data(), buf.data(), buf.data(), 0, 4, kEps),
               Error);
}

// bf16 x, w and dy rounded on the host so the CPU reference sees the GPU's exact inputs.
struct GpuCase {
  int64_t N, C;
};
// C = 1024 and 96 take the 16-byte path; 77 the scalar one; N = 5000 makes warps loop over rows.
const GpuCase kGpuCases[] = {{37, 1024}, {5000, 96}, {5, 77}, {1, 8}};

TEST(RmsNormKernels, CudaForwardMatchesCpu) {
  INFLLM_REQUIRE_GPU();
  for (bool with_residual : {false, true}) {
    for (const GpuCase& g : kGpuCases) {
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE(::testing::Message() << "N=" << g.N << " C=" << g.C
                                        << " residual=" << with_residual << " seed=" << seed);
      const int64_t N = g.N, C = g.C;
      Inputs in = make_inputs(N, C, seed);
      in.x = round_to_bf16(in.x);
      in.residual = round_to_bf16(in.residual);
      in.w = round_to_bf16(in.w);
      // The GPU rounds the residual sum to bf16 and normalizes the rounded values.
      std::vector<double> sum_ref = in.x;
      if (with_residual) {
        for (int64_t i = 0; i < N * C; ++i) sum_ref[i] += in.residual[i];
        sum_ref = round_to_bf16(sum_ref);
      }
      std::vector<double> y_ref(N * C), rstd_ref(N);
      rms_norm_forward_cpu(sum_ref.data(), in.w.data(), y_ref.data(), rstd_ref.data(), N, C, kEps);

      DeviceBuffer<uint16_t> x(to_bf16(in.x)), residual(to_bf16(in.residual)), w(to_bf16(in.w));
      DeviceBuffer<uint16_t> sum(N * C), y(N * C);
      DeviceBuffer<float> rstd(N);
      y.poison();
      sum.poison();
      rstd.poison();
      if (with_residual) {
        rms_norm_residual_forward_cuda(x.get(), residual.get(), sum.get(), w.get(), y.get(),
                                       rstd.get(), N, C, float(kEps), nullptr);
        EXPECT_LT(rel_error(from_bf16(sum.download()), sum_ref), 1e-6);
      } else {
        rms_norm_forward_cuda(x.get(), w.get(), y.get(), rstd.get(), N, C, float(kEps), nullptr);
      }
      EXPECT_LT(rel_error(from_bf16(y.download()), y_ref), 1e-2);
      EXPECT_LT(rel_error(convert<double>(rstd.download()), rstd_ref), 1e-5);
    }
  }
}

TEST(RmsNormKernels, CudaBackwardMatchesCpuAndRepeatsBitwise) {
  INFLLM_REQUIRE_GPU();
  for (const GpuCase& g : kGpuCases) {
    for (bool with_dsum : {false, true}) {
      const uint64_t seed = fresh_seed();
      SCOPED_TRACE(::testing::Message()
                   << "N=" << g.N << " C=" << g.C << " dsum=" << with_dsum << " seed=" << seed);
      const int64_t N = g.N, C = g.C;
      Inputs in = make_inputs(N, C, seed);
      in.x = round_to_bf16(in.x);
      in.w = round_to_bf16(in.w);
      in.dy = round_to_bf16(in.dy);
      in.dsum = round_to_bf16(in.dsum);
      // Both sides use the same f32 rstd, as the GPU backward reads the forward's.
      std::vector<double> y(N * C), rstd(N);
      rms_norm_forward_cpu(in.x.data(), in.w.data(), y.data(), rstd.data(), N, C, kEps);
      const std::vector<float> rstd_f32 = convert<float>(rstd);
      rstd = convert<double>(rstd_f32);
      std::vector<double> dx_ref(N * C), dw_ref(C);
      rms_norm_backward_cpu(in.dy.data(), in.x.data(), in.w.data(), rstd.data(),
                            with_dsum ? in.dsum.data() : nullptr, dx_ref.data(), dw_ref.data(), N,
                            C);

      DeviceBuffer<uint16_t> x(to_bf16(in.x)), w(to_bf16(in.w)), dy(to_bf16(in.dy)),
          dsum(to_bf16(in.dsum)), dx(N * C);
      DeviceBuffer<float> rstd_dev(rstd_f32), dw(C);
      DeviceBuffer<unsigned char> workspace(rms_norm_backward_cuda_workspace_bytes(N, C));
      std::vector<uint16_t> first_dx;
      std::vector<float> first_dw;
      for (int run = 0; run < 2; ++run) {
        dx.poison();
        dw.poison();
        rms_norm_backward_cuda(dy.get(), x.get(), w.get(), rstd_dev.get(),
                               with_dsum ? dsum.get() : nullptr, dx.get(), dw.get(),
                               workspace.get(), N, C, nullptr);
        if (run == 0) {
          first_dx = dx.download();
          first_dw = dw.download();
          EXPECT_LT(rel_error(from_bf16(first_dx), dx_ref), 1e-2);
          EXPECT_LT(rel_error(convert<double>(first_dw), dw_ref), 1e-5);
        } else {
          EXPECT_EQ(dx.download(), first_dx);
          EXPECT_EQ(dw.download(), first_dw);
        }
      }
    }
  }
}

}  // namespace
}  // namespace infllm
