// Every differentiable function's gradient against central finite differences in f64.
#include "autograd/engine.h"
#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "tests/test_util.h"

namespace infllm {
namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

Tensor input(const Shape& shape, double low = -1.5, double high = 1.5) {
  Tensor t = testing::random_uniform(shape, low, high, DType::f64);
  t.set_requires_grad(true);
  return t;
}

void expect_gradients_match(const char* name, const Fn& fn, const std::vector<Tensor>& inputs) {
  GradcheckResult r = gradcheck(fn, inputs);
  EXPECT_LT(r.max_error, 1e-6) << name << ": " << r.worst;
}

TEST(Gradients, BinaryWithBroadcasting) {
  Tensor a = input({3, 1, 4}), b = input({5, 4}), pos = input({5, 4}, 0.5, 2.0);
  expect_gradients_match("add", [](auto& x) { return add(x[0], x[1]); }, {a, b});
  expect_gradients_match("sub", [](auto& x) { return sub(x[0], x[1]); }, {a, b});
  expect_gradients_match("mul", [](auto& x) { return mul(x[0], x[1]); }, {a, b});
  expect_gradients_match("div", [](auto& x) { return div(x[0], x[1]); }, {a, pos});
  expect_gradients_match("scalars", [](auto& x) { return add(mul(x[0], 3.0), -2.0); }, {a});
}

TEST(Gradients, Unary) {
  Tensor x = input({4, 7}), pos = input({4, 7}, 0.3, 3.0);
  expect_gradients_match("neg", [](auto& v) { return neg(v[0]); }, {x});
  expect_gradients_match("exp", [](auto& v) { return exp(v[0]); }, {x});
  expect_gradients_match("log", [](auto& v) { return log(v[0]); }, {pos});
  expect_gradients_match("sqrt", [](auto& v) { return sqrt(v[0]); }, {pos});
  expect_gradients_match("rsqrt", [](auto& v) { return rsqrt(v[0]); }, {pos});
  expect_gradients_match("sigmoid", [](auto& v) { return sigmoid(v[0]); }, {x});
  expect_gradients_match("silu", [](auto& v) { return silu(v[0]); }, {x});
  expect_gradients_match("gelu", [](auto& v) { return gelu(v[0]); }, {x});
  expect_gradients_match("square", [](auto& v) { return square(v[0]); }, {x});
}

TEST(Gradients, ReductionsAndSoftmax) {
  Tensor x = input({3, 5, 2});
  for (int64_t axis : {0, 1, 2}) {
    expect_gradients_match("sum", [=](auto& v) { return sum(v[0], axis); }, {x});
    expect_gradients_match("mean", [=](auto& v) { return mean(v[0], axis, true); }, {x});
    expect_gradients_match("max", [=](auto& v) { return max(v[0], axis); }, {x});
  }
  expect_gradients_match("sum all", [](auto& v) { return sum(v[0]); }, {x});
  expect_gradients_match("softmax", [](auto& v) { return softmax(v[0]); }, {x});
  expect_gradients_match("log_softmax", [](auto& v) { return log_softmax(v[0]); }, {x});
}

TEST(Gradients, MatmulAllTransposesAndBatches) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Tensor a = input(ta ? Shape{2, 5, 3} : Shape{2, 3, 5});
      Tensor b = input(tb ? Shape{4, 5} : Shape{5, 4});
      expect_gradients_match("matmul", [=](auto& v) { return matmul(v[0], v[1], ta, tb); }, {a, b});
    }
}

TEST(Gradients, EmbeddingAndShapes) {
  Tensor table = input({6, 3});
  Tensor index = Tensor::from_vector<int32_t>({5, 0, 5, 2}, {2, 2});
  expect_gradients_match("embedding", [](auto& v) { return embedding(v[0], v[1]); },
                         {table, index});
  Tensor x = input({2, 3, 4}), y = input({2, 1, 4});
  expect_gradients_match("reshape", [](auto& v) { return reshape(v[0], {6, 4}); }, {x});
  expect_gradients_match("permute", [](auto& v) { return permute(v[0], {2, 0, 1}); }, {x});
  expect_gradients_match("transpose", [](auto& v) { return transpose(v[0], 0, 2); }, {x});
  expect_gradients_match("slice", [](auto& v) { return slice(v[0], 1, 1, 3); }, {x});
  expect_gradients_match("concat", [](auto& v) { return concat({v[0], v[1]}, 1); }, {x, y});
  expect_gradients_match("contiguous", [](auto& v) { return contiguous(transpose(v[0], 0, 1)); },
                         {x});
}

TEST(Gradients, CastReturnsTheGradientInTheInputDtype) {
  // Finite differences through an f32 round trip are too coarse, so check the rule directly.
  Tensor x = input({5});
  backward(sum(mul(cast(x, DType::f32), 2.0)));
  EXPECT_EQ(x.grad().dtype(), DType::f64);
  for (double g : x.grad().to_vector<double>()) EXPECT_EQ(g, 2.0);
}

TEST(Gradients, GradcheckCatchesAWrongGradient) {
  // A function whose recorded backward is deliberately wrong must fail the check, so a
  // passing gradcheck means something.
  Tensor x = input({3});
  Fn wrong = [](const std::vector<Tensor>& v) {
    Tensor y = ops::mul(v[0], 2.0);
    return autograd::record("wrong", {v[0]}, y,
                            [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0]}; });
  };
  EXPECT_GT(gradcheck(wrong, {x}).max_error, 0.1);
}

}  // namespace
}  // namespace infllm
