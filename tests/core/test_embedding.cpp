// Embedding gather / scatter-add, including repeated and out-of-range indices.
#include "core/kernels/embedding.h"

#include "tests/test_util.h"

namespace infllm {
namespace {

TEST(Embedding, GatherAndScatterAddWithRepeats) {
  const int64_t vocab = 11, width = 13;
  Tensor table = testing::random_normal({vocab, width});
  std::vector<int32_t> idx = {3, 0, 10, 3, 3, 7};
  Tensor index = Tensor::from_vector(idx, {2, 3});
  Tensor out = ops::embedding(table, index);
  ASSERT_EQ(out.shape(), (Shape{2, 3, width}));
  std::vector<double> tv = testing::as_f64(table), ref;
  for (int32_t i : idx)
    for (int64_t c = 0; c < width; ++c) ref.push_back(tv[i * width + c]);
  EXPECT_EQ(testing::rel_error(out, ref), 0.0);

  Tensor dout = testing::random_normal({2, 3, width});
  Tensor dtable = ops::zeros({vocab, width});
  ops::embedding_backward_into(index, dout, dtable);
  std::vector<double> dv = testing::as_f64(dout), dref(vocab * width, 0.0);
  for (size_t n = 0; n < idx.size(); ++n)
    for (int64_t c = 0; c < width; ++c) dref[idx[n] * width + c] += dv[n * width + c];
  EXPECT_LT(testing::rel_error(dtable, dref), 1e-6);
}

TEST(Embedding, OutOfRangeIndexNamesPositionAndValue) {
  Tensor table = testing::random_normal({5, 4});
  Tensor index = Tensor::from_vector<int32_t>({1, 2, 9}, {3});
  try {
    ops::embedding(table, index);
    FAIL() << "index 9 with V=5 must throw";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("index 9"), std::string::npos) << msg;
    EXPECT_NE(msg.find("position 2"), std::string::npos) << msg;
  }
  EXPECT_THROW(ops::embedding(table, Tensor::from_vector<int32_t>({-1}, {1})), Error);
  EXPECT_THROW(ops::embedding(table, Tensor::from_vector<float>({1}, {1})), Error);
}

}  // namespace
}  // namespace infllm
