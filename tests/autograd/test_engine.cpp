// The engine on graph shapes that break naive implementations.
#include "autograd/engine.h"

#include "autograd/functions.h"
#include "autograd/node.h"
#include "tests/test_util.h"

namespace infllm {
namespace {

Tensor leaf(const Shape& shape) {
  Tensor t = testing::random_normal(shape, DType::f64);
  t.set_requires_grad(true);
  return t;
}

TEST(Engine, SharedSubexpressionSumsBothPaths) {
  // y = sum(h * h + h) with h = x * 3: dy/dx = 3 * (2h + 1).
  Tensor x = leaf({5});
  Tensor h = mul(x, 3.0);
  backward(sum(add(mul(h, h), h)));
  std::vector<double> xv = x.to_vector<double>(), g = x.grad().to_vector<double>();
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(g[i], 3 * (2 * 3 * xv[i] + 1), 1e-12);
}

TEST(Engine, ReusedLeafAccumulatesAcrossBackwardCalls) {
  Tensor x = leaf({4});
  backward(sum(mul(x, x)));
  backward(sum(mul(x, 5.0)));
  std::vector<double> xv = x.to_vector<double>(), g = x.grad().to_vector<double>();
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(g[i], 2 * xv[i] + 5, 1e-12);
}

TEST(Engine, NoGradRegionsRecordNothing) {
  Tensor x = leaf({3});
  Tensor y;
  {
    autograd::NoGradGuard guard;
    y = mul(x, 2.0);
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
  EXPECT_THROW(backward(sum(y)), Error);
  Tensor z = mul(x, 2.0);
  EXPECT_TRUE(z.requires_grad());
}

TEST(Engine, SecondBackwardThroughAFreedGraphIsAnError) {
  Tensor x = leaf({3});
  Tensor loss = sum(exp(x));
  backward(loss);
  EXPECT_THROW(backward(loss), Error);
}

TEST(Engine, DeepChainRunsInOrderAndGradientsAreRight) {
  Tensor x = leaf({2});
  Tensor h = x;
  for (int i = 0; i < 200; ++i) h = add(h, mul(x, 0.01));
  backward(sum(h));
  for (double g : x.grad().to_vector<double>()) EXPECT_NEAR(g, 1 + 200 * 0.01, 1e-10);
}

TEST(Engine, UnusedOutputOfAMultiOutputNodeGetsZeros) {
  Tensor x = leaf({4});
  Tensor a = x, b = x;
  Tensor x2 = ops::mul(x, 2.0), x3 = ops::mul(x, 3.0);
  autograd::record("split", {x}, {&x2, &x3}, [](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{ops::add(ops::mul(g[0], 2.0), ops::mul(g[1], 3.0))};
  });
  backward(sum(x3));
  for (double g : x.grad().to_vector<double>()) EXPECT_NEAR(g, 3.0, 1e-12);
}

TEST(Engine, PreallocatedGradsAccumulateInPlaceAndHooksFire) {
  // Data parallelism points leaves' grads into flat buffers and listens for completion.
  Tensor x = leaf({3});
  Tensor buffer = ops::zeros({5}, DType::f64);
  x.set_grad(buffer.slice(0, 1, 4));
  int calls = 0;
  x.ensure_autograd_meta().on_grad_accumulated = [&] { ++calls; };
  backward(sum(add(mul(x, 2.0), mul(x, 3.0))));  // two uses: two accumulations, two calls
  EXPECT_EQ(calls, 2);
  std::vector<double> b = buffer.to_vector<double>();
  EXPECT_EQ(b, (std::vector<double>{0, 5, 5, 5, 0}));
}

}  // namespace
}  // namespace infllm
