// Elementwise kernels against f64 formulas, with broadcasting and non-contiguous views.
#include "core/kernels/elementwise.h"

#include <cmath>

#include "tests/test_util.h"

namespace infllm {
namespace {

using testing::as_f64;
using testing::rel_error;

double reference_unary(UnaryOp op, double x) {
  double c = std::sqrt(2.0 / M_PI);
  double s = 1.0 / (1.0 + std::exp(-x));
  double u = c * (x + 0.044715 * x * x * x);
  switch (op) {
    case UnaryOp::neg:
      return -x;
    case UnaryOp::exp:
      return std::exp(x);
    case UnaryOp::log:
      return std::log(x);
    case UnaryOp::sqrt:
      return std::sqrt(x);
    case UnaryOp::rsqrt:
      return 1.0 / std::sqrt(x);
    case UnaryOp::sigmoid:
      return s;
    case UnaryOp::silu:
      return x * s;
    case UnaryOp::silu_grad:
      return s * (1 + x * (1 - s));
    case UnaryOp::gelu:
      return 0.5 * x * (1 + std::tanh(u));
    case UnaryOp::gelu_grad: {
      double t = std::tanh(u);
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x);
    }
    case UnaryOp::square:
      return x * x;
  }
  return 0;
}

class UnaryTest : public ::testing::TestWithParam<UnaryOp> {};

TEST_P(UnaryTest, MatchesF64FormulaOnStridedInputs) {
  UnaryOp op = GetParam();
  bool positive = op == UnaryOp::log || op == UnaryOp::sqrt || op == UnaryOp::rsqrt;
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tensor x = positive ? testing::random_uniform({7, 33}, 0.1, 4.0, dtype)
                        : testing::random_normal({7, 33}, dtype);
    Tensor strided = x.transpose(0, 1);  // non-contiguous input
    std::vector<double> in = as_f64(strided), ref(in.size());
    for (size_t i = 0; i < in.size(); ++i) ref[i] = reference_unary(op, in[i]);
    double tolerance = dtype == DType::f32 ? 1e-5 : 1e-2;
    EXPECT_LT(rel_error(ops::unary(op, strided), ref), tolerance)
        << unary_op_name(op) << " " << dtype_name(dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(AllOps, UnaryTest,
                         ::testing::Values(UnaryOp::neg, UnaryOp::exp, UnaryOp::log, UnaryOp::sqrt,
                                           UnaryOp::rsqrt, UnaryOp::sigmoid, UnaryOp::silu,
                                           UnaryOp::silu_grad, UnaryOp::gelu, UnaryOp::gelu_grad,
                                           UnaryOp::square));

TEST(Binary, BroadcastsLikeNumpy) {
  Tensor a = testing::random_normal({3, 1, 5});
  Tensor b = testing::random_uniform({4, 5}, 0.5, 2.0);
  std::vector<double> av = as_f64(a), bv = as_f64(b);
  for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div}) {
    Tensor out = ops::binary(op, a, b);
    ASSERT_EQ(out.shape(), (Shape{3, 4, 5}));
    std::vector<double> ref;
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j)
        for (int k = 0; k < 5; ++k) {
          double x = av[i * 5 + k], y = bv[j * 5 + k];
          ref.push_back(op == BinaryOp::add   ? x + y
                        : op == BinaryOp::sub ? x - y
                        : op == BinaryOp::mul ? x * y
                                              : x / y);
        }
    EXPECT_LT(rel_error(out, ref), 1e-6) << binary_op_name(op);
  }
}

TEST(Binary, ScalarsSizeOneDimsAndInPlaceAccumulate) {
  Tensor a = testing::random_normal({1, 9});
  std::vector<double> av = as_f64(a), ref;
  for (double x : av) ref.push_back(x * 2.5 + 0.75);
  EXPECT_LT(rel_error(ops::add(ops::mul(a, 2.5), 0.75), ref), 1e-6);
  Tensor acc = testing::random_normal({2, 9});
  std::vector<double> accv = as_f64(acc);
  ops::add_(acc, a);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 9; ++j) accv[i * 9 + j] += av[j];
  EXPECT_LT(rel_error(acc, accv), 1e-6);
}

TEST(Binary, MismatchesNameBothShapes) {
  Tensor a = testing::random_normal({3, 4}), b = testing::random_normal({5});
  try {
    ops::add(a, b);
    FAIL() << "non-broadcastable shapes must throw";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("add"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[3, 4]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[5]"), std::string::npos) << msg;
  }
  EXPECT_THROW(ops::add(a, ops::cast(a, DType::bf16)), Error);
  EXPECT_THROW(ops::exp(Tensor::from_vector<int32_t>({1}, {1})), Error);
}

TEST(Cast, ConvertsBetweenIntegerAndFloatTypes) {
  Tensor x = Tensor::from_vector<int32_t>({-3, 0, 70000}, {3});
  EXPECT_EQ(ops::cast(x, DType::f32).to_vector<float>(), (std::vector<float>{-3, 0, 70000}));
  EXPECT_EQ(ops::cast(x, DType::i64).to_vector<int64_t>(), (std::vector<int64_t>{-3, 0, 70000}));
  Tensor f = Tensor::from_vector<float>({1.0f, 3.0f}, {2});
  EXPECT_EQ(ops::cast(f, DType::u16).to_vector<uint16_t>(), (std::vector<uint16_t>{1, 3}));
}

}  // namespace
}  // namespace infllm
