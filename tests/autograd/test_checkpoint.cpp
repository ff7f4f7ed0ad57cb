// Checkpointed functions give the same gradients as the plain graph.
#include "autograd/checkpoint.h"

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "autograd/node.h"
#include "tests/test_util.h"

namespace infllm {
namespace {

TEST(Checkpoint, GradientsEqualTheUncheckpointedGraph) {
  Tensor w1 = testing::random_normal({6, 8}, DType::f64),
         w2 = testing::random_normal({8, 6}, DType::f64);
  Tensor x0 = testing::random_normal({4, 6}, DType::f64);
  auto block = [&](const std::vector<Tensor>& in) {
    Tensor h = silu(matmul(in[0], w1));
    return std::vector<Tensor>{add(in[0], matmul(h, w2))};
  };
  auto run = [&](bool use_checkpoint) {
    for (Tensor* w : {&w1, &w2}) {
      w->set_grad(Tensor());
      w->set_requires_grad(true);
    }
    Tensor x = x0.clone();
    x.set_requires_grad(true);
    Tensor h = x;
    for (int layer = 0; layer < 3; ++layer) {
      h = use_checkpoint ? checkpoint(block, {h})[0] : block({h})[0];
    }
    backward(sum(square(h)));
    return std::vector<std::vector<double>>{
        x.grad().to_vector<double>(), w1.grad().to_vector<double>(), w2.grad().to_vector<double>()};
  };
  auto plain = run(false), checkpointed = run(true);
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_LT(testing::rel_error(checkpointed[i], plain[i]), 1e-14) << "gradient " << i;
  }
}

TEST(Checkpoint, ForwardKeepsNoIntermediates) {
  Tensor x = testing::random_normal({3}, DType::f64);
  x.set_requires_grad(true);
  auto fn = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{exp(exp(in[0]))}; };
  Tensor y = checkpoint(fn, {x})[0];
  // The only node is the checkpoint itself, pointing straight at the leaf x.
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_EQ(y.grad_fn()->name(), "checkpoint");
  EXPECT_TRUE(y.grad_fn()->inputs()[0].leaf != nullptr);
}

}  // namespace
}  // namespace infllm
