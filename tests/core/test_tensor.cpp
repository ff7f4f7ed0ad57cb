// Tensor views, copies and error messages.
#include "core/tensor.h"

#include "tests/test_util.h"

namespace infllm {
namespace {

using testing::random_normal;

// Element (i, j, k) of a 3-d view read through its strides.
double at(const Tensor& t, int64_t i, int64_t j, int64_t k) {
  const float* base = t.data<float>();
  return base[i * t.strides()[0] + j * t.strides()[1] + k * t.strides()[2]];
}

TEST(Tensor, PermuteSliceAndContiguousAgreeWithIndexing) {
  Tensor x = random_normal({3, 5, 7});
  Tensor p = x.permute({2, 0, 1});  // [7, 3, 5]
  EXPECT_EQ(p.shape(), (Shape{7, 3, 5}));
  EXPECT_FALSE(p.is_contiguous());
  Tensor c = p.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  for (int64_t i = 0; i < 7; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 5; ++k) ASSERT_EQ(at(c, i, j, k), at(x, j, k, i));
  Tensor s = x.slice(1, 1, 4).slice(2, 2, 7);  // [3, 3, 5]
  Tensor sc = s.contiguous();
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 5; ++k) ASSERT_EQ(at(sc, i, j, k), at(x, i, j + 1, k + 2));
}

TEST(Tensor, ViewsShareStorageAndReshapeCopiesWhenNeeded) {
  Tensor x = random_normal({4, 6});
  Tensor v = x.view({2, 12});
  EXPECT_EQ(v.storage(), x.storage());
  EXPECT_EQ(x.view({-1}).shape(), (Shape{24}));
  Tensor t = x.transpose(0, 1);
  Tensor r = t.reshape({24});
  EXPECT_NE(r.storage(), x.storage());
  std::vector<float> xv = x.to_vector<float>(), rv = r.to_vector<float>();
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 4; ++j) ASSERT_EQ(rv[i * 4 + j], xv[j * 6 + i]);
  Tensor sel = x.select(0, 2);
  EXPECT_EQ(sel.shape(), (Shape{6}));
  EXPECT_EQ(sel.to_vector<float>()[3], xv[2 * 6 + 3]);
}

TEST(Tensor, RoundTripsEveryDtype) {
  EXPECT_EQ(Tensor::from_vector<int32_t>({1, -2, 3}, {3}).to_vector<int32_t>(),
            (std::vector<int32_t>{1, -2, 3}));
  EXPECT_EQ(Tensor::from_vector<uint16_t>({65535, 7}, {2}).to_vector<uint16_t>()[0], 65535);
  EXPECT_EQ(Tensor::from_vector<uint32_t>({4000000000u}, {1}).to_vector<uint32_t>()[0],
            4000000000u);
  EXPECT_EQ(Tensor::from_vector<int64_t>({-(1ll << 40)}, {1}).item(), double(-(1ll << 40)));
  EXPECT_EQ(Tensor::from_vector<double>({0.1}, {1}).item(), 0.1);
  Tensor b = ops::cast(Tensor::from_vector<float>({1.5f, -3.25f}, {2}), DType::bf16);
  EXPECT_EQ(b.dtype(), DType::bf16);
  EXPECT_EQ(ops::cast(b, DType::f32).to_vector<float>(), (std::vector<float>{1.5f, -3.25f}));
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(dtype_size(DType::i64), 8u);
}

TEST(Tensor, BadViewsNameTheShapes) {
  Tensor x = random_normal({4, 6});
  try {
    x.view({5, 5});
    FAIL() << "view with the wrong element count must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[5, 5]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4, 6]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(x.transpose(0, 1).view({24}), Error);
  EXPECT_THROW(x.slice(1, 4, 9), Error);
  EXPECT_THROW(x.permute({0, 0}), Error);
  EXPECT_THROW(x.data<double>(), Error);
  EXPECT_THROW(Tensor::from_vector<float>({1, 2, 3}, {2, 2}), Error);
}

TEST(Tensor, CudaTensorWithoutGpuIsAClearError) {
  if (testing::has_gpu()) GTEST_SKIP() << "this machine has a GPU; the error path needs none";
  try {
    Tensor::empty({2}, DType::f32, Device::cuda(0));
    FAIL() << "allocating on a missing GPU must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
  EXPECT_THROW(random_normal({2}).to(Device::cuda(0)), Error);
  EXPECT_THROW(parse_device("tpu"), Error);
}

}  // namespace
}  // namespace infllm
