// RoPE kernels: the CPU reference against the rotate-half formula and finite differences; the
// CUDA kernels (bf16 and f32) against the CPU reference, the f32 one at positions near 131072.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "layers/rope_kernels.h"
#include "tests/layers/kernel_test_support.h"

namespace infllm {
namespace {

using namespace kernel_test;

constexpr double kTheta = 10000.0;

// The PyTorch code, element by element: x1 = x[..., :D/2], x2 = x[..., D/2:],
// out = cat(x1 * cos - x2 * sin, x2 * cos + x1 * sin), angle = p * theta^(-2i/D); heads from
// `rotated` on are copied.
std::vector<double> formula(const std::vector<double>& x, int64_t B, int64_t T, int64_t H,
                            int64_t D, int64_t offset, int64_t rotated) {
  std::vector<double> out(x);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < rotated; ++h)
        for (int64_t i = 0; i < D / 2; ++i) {
          const double angle = double(offset + t) * std::pow(kTheta, -2.0 * double(i) / double(D));
          const int64_t base = ((b * T + t) * H + h) * D;
          const double x1 = x[base + i], x2 = x[base + D / 2 + i];
          out[base + i] = x1 * std::cos(angle) - x2 * std::sin(angle);
          out[base + D / 2 + i] = x2 * std::cos(angle) + x1 * std::sin(angle);
        }
  return out;
}

TEST(RopeKernels, CpuForwardMatchesFormula) {
  struct Case {
    int64_t B, T, H, D, offset, rotated;
  };
  // The last case is a packed q/k/v row: 2 q heads and 1 k head turn, 1 v head passes through.
  for (const Case& c : {Case{1, 1, 1, 2, 0, 1}, Case{2, 5, 3, 6, 7, 3}, Case{1, 9, 2, 64, 1000, 2},
                        Case{2, 7, 4, 8, 3, 3}}) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(::testing::Message()
                 << "D=" << c.D << " rotated=" << c.rotated << " seed=" << seed);
    const std::vector<double> x = random_normal(c.B * c.T * c.H * c.D, 1.0, seed);
    const std::vector<double> ref = formula(x, c.B, c.T, c.H, c.D, c.offset, c.rotated);
    std::vector<float> out(x.size());
    rope_forward_cpu(convert<float>(x).data(), out.data(), c.B, c.T, c.H, c.D, kTheta, c.offset,
                     c.rotated);
    EXPECT_LT(rel_error(convert<double>(out), ref), 1e-6);
    std::vector<double> outd(x.size());
    rope_forward_cpu(x.data(), outd.data(), c.B, c.T, c.H, c.D, kTheta, c.offset, c.rotated);
    EXPECT_LT(rel_error(outd, ref), 1e-13);
  }
}

TEST(RopeKernels, CpuBackwardMatchesFiniteDifferencesAndInverts) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed=" << seed);
  const int64_t B = 2, T = 3, H = 2, D = 10, offset = 5;
  std::vector<double> x = random_normal(B * T * H * D, 1.0, seed);
  const std::vector<double> dout = random_normal(x.size(), 1.0, seed + 1);
  auto loss = [&] {
    std::vector<double> out(x.size());
    rope_forward_cpu(x.data(), out.data(), B, T, H, D, kTheta, offset, H);
    return dot(out, dout);
  };
  std::vector<double> dx(x.size());
  rope_backward_cpu(dout.data(), dx.data(), B, T, H, D, kTheta, offset, H);
  EXPECT_LT(rel_error(dx, finite_difference_gradient(x, loss)), 1e-7);

  // Rotating back by -angle restores the input, here in place.
  std::vector<double> y(x.size());
  rope_forward_cpu(x.data(), y.data(), B, T, H, D, kTheta, offset, H);
  rope_backward_cpu(y.data(), y.data(), B, T, H, D, kTheta, offset, H);
  EXPECT_LT(rel_error(y, x), 1e-14);
}

TEST(RopeKernels, RejectsOddHeadDim) {
  std::vector<float> x(6);
  EXPECT_THROW(rope_forward_cpu(x.data(), x.data(), 1, 1, 2, 3, kTheta, 0, 2), Error);
  std::vector<float> y(8);
  EXPECT_THROW(rope_forward_cpu(y.data(), y.data(), 1, 1, 2, 4, kTheta, 0, 3), Error);  // > H
}

struct GpuCase {
  int64_t B, T, H, D, offset, rotated;
};

// Runs forward and backward of one dtype (uint16_t = bf16, or float) out of place and in place.
template <class Elem>
void check_cuda_against_cpu(const GpuCase& c, double tolerance) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message()
               << "B=" << c.B << " T=" << c.T << " H=" << c.H << " D=" << c.D
               << " offset=" << c.offset << " rotated=" << c.rotated << " seed=" << seed);
  constexpr bool kBf16 = std::is_same_v<Elem, uint16_t>;
  std::vector<double> x = random_normal(c.B * c.T * c.H * c.D, 1.0, seed);
  if (kBf16) x = round_to_bf16(x);
  auto upload = [&](const std::vector<double>& v) {
    if constexpr (kBf16) {
      return to_bf16(v);
    } else {
      return convert<float>(v);
    }
  };
  auto download = [&](const DeviceBuffer<Elem>& buf) {
    if constexpr (kBf16) {
      return from_bf16(buf.download());
    } else {
      return convert<double>(buf.download());
    }
  };
  for (bool backward : {false, true}) {
    std::vector<double> ref(x.size());
    (backward ? rope_backward_cpu<double> : rope_forward_cpu<double>)(x.data(), ref.data(), c.B,
                                                                      c.T, c.H, c.D, kTheta,
                                                                      c.offset, c.rotated);
    using Kernel = void (*)(const Elem*, Elem*, int64_t, int64_t, int64_t, int64_t, double, int64_t,
                            int64_t, void*);
    auto run =
        backward ? static_cast<Kernel>(rope_backward_cuda) : static_cast<Kernel>(rope_forward_cuda);
    DeviceBuffer<Elem> in(upload(x)), out(x.size());
    out.poison();
    run(in.get(), out.get(), c.B, c.T, c.H, c.D, kTheta, c.offset, c.rotated, nullptr);
    EXPECT_LT(rel_error(download(out), ref), tolerance) << "out of place, backward=" << backward;
    run(in.get(), in.get(), c.B, c.T, c.H, c.D, kTheta, c.offset, c.rotated, nullptr);
    EXPECT_LT(rel_error(download(in), ref), tolerance) << "in place, backward=" << backward;
  }
}

// D = 64 and 128 take the 16-byte path, D = 6 and 12 the scalar one; H = 5 leaves a partial head
// group; offsets reach the long-context positions; rotated < H are packed q/k/v rows.
const GpuCase kGpuCases[] = {{2, 33, 5, 64, 0, 3},
                             {1, 17, 16, 128, 4000, 16},
                             {3, 4, 3, 6, 11, 1},
                             {1, 64, 2, 128, 131008, 2},
                             {1, 5, 7, 12, 131067, 6}};

TEST(RopeKernels, CudaBf16MatchesCpu) {
  INFLLM_REQUIRE_GPU();
  for (const GpuCase& c : kGpuCases) check_cuda_against_cpu<uint16_t>(c, 1e-2);
}

// The f32 path shows the angle's precision: at positions 131008..131071 an angle formed in f32
// would be off by up to 4e-3 rad; the double-formed, reduced angle keeps this under 1e-5.
TEST(RopeKernels, CudaF32MatchesCpuAtLongContextPositions) {
  INFLLM_REQUIRE_GPU();
  for (const GpuCase& c : kGpuCases) check_cuda_against_cpu<float>(c, 1e-5);
}

}  // namespace
}  // namespace infllm
