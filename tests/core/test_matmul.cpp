// Matmul against an f64 triple loop: transposes, batch broadcasting, accumulation, odd sizes.
#include "core/kernels/matmul.h"

#include "tests/test_util.h"

namespace infllm {
namespace {

using testing::as_f64;
using testing::rel_error;

// out[b] = op(a[b]) @ op(c[b]) with row-major stored operands.
std::vector<double> reference(const std::vector<double>& a, const std::vector<double>& b,
                              int64_t batch_a, int64_t batch_b, int64_t batch, int64_t m, int64_t n,
                              int64_t k, bool trans_a, bool trans_b) {
  std::vector<double> out(batch * m * n, 0.0);
  for (int64_t p = 0; p < batch; ++p) {
    const double* pa = a.data() + (batch_a == 1 ? 0 : p) * m * k;
    const double* pb = b.data() + (batch_b == 1 ? 0 : p) * k * n;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t l = 0; l < k; ++l) {
          acc +=
              (trans_a ? pa[l * m + i] : pa[i * k + l]) * (trans_b ? pb[j * k + l] : pb[l * n + j]);
        }
        out[(p * m + i) * n + j] = acc;
      }
  }
  return out;
}

TEST(Matmul, AllTransposeCombinationsOddSizes) {
  const int64_t m = 67, n = 45, k = 131;
  for (DType dtype : {DType::f32, DType::bf16, DType::f64}) {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        Tensor a = testing::random_normal(ta ? Shape{k, m} : Shape{m, k}, dtype);
        Tensor b = testing::random_normal(tb ? Shape{n, k} : Shape{k, n}, dtype);
        Tensor out = ops::matmul(a, b, ta, tb);
        ASSERT_EQ(out.shape(), (Shape{m, n}));
        auto ref = reference(as_f64(a), as_f64(b), 1, 1, 1, m, n, k, ta, tb);
        double tolerance = dtype == DType::bf16 ? 1e-2 : 1e-5;
        EXPECT_LT(rel_error(out, ref), tolerance) << ta << tb << " " << dtype_name(dtype);
      }
  }
}

TEST(Matmul, BatchedWithBroadcastWeightsAndAccumulation) {
  const int64_t batch = 3, m = 5, n = 1, k = 17;
  Tensor a = testing::random_normal({batch, m, k});
  Tensor w = testing::random_normal({k, n});
  Tensor out = ops::matmul(a, w);
  ASSERT_EQ(out.shape(), (Shape{batch, m, n}));
  auto ref = reference(as_f64(a), as_f64(w), batch, 1, batch, m, n, k, false, false);
  EXPECT_LT(rel_error(out, ref), 1e-5);
  // beta = 1 adds into the existing output (gradient accumulation).
  std::vector<double> twice = ref;
  for (double& v : twice) v *= 2;
  ops::matmul_into(a, w, out, {false, false, 1.0f, 1.0f});
  EXPECT_LT(rel_error(out, twice), 1e-5);
  // A non-contiguous operand is made contiguous at the boundary.
  Tensor at = testing::random_normal({k, m}).transpose(0, 1);
  auto ref2 = reference(as_f64(at), as_f64(w), 1, 1, 1, m, n, k, false, false);
  EXPECT_LT(rel_error(ops::matmul(at, w), ref2), 1e-5);
}

TEST(Matmul, InnerMismatchNamesShapes) {
  try {
    ops::matmul(testing::random_normal({3, 4}), testing::random_normal({5, 6}));
    FAIL() << "inner dimension mismatch must throw";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("[3, 4]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[5, 6]"), std::string::npos) << msg;
  }
  EXPECT_THROW(ops::matmul(testing::random_normal({4}), testing::random_normal({4, 2})), Error);
}

}  // namespace
}  // namespace infllm
