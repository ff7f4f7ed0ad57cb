// Reductions and softmax-free statistics against f64 loops.
#include "core/kernels/reduce.h"

#include <cmath>

#include "tests/test_util.h"

namespace infllm {
namespace {

using testing::as_f64;
using testing::rel_error;

// Reference reduction of axis 1 of a [outer, n, inner] array.
std::vector<double> reference(ReduceOp op, const std::vector<double>& x, int64_t outer, int64_t n,
                              int64_t inner) {
  std::vector<double> out;
  for (int64_t a = 0; a < outer; ++a)
    for (int64_t c = 0; c < inner; ++c) {
      double acc = op == ReduceOp::max ? -INFINITY : 0;
      for (int64_t i = 0; i < n; ++i) {
        double v = x[(a * n + i) * inner + c];
        acc = op == ReduceOp::max ? std::max(acc, v) : acc + v;
      }
      out.push_back(op == ReduceOp::mean ? acc / double(n) : acc);
    }
  return out;
}

TEST(Reduce, EveryAxisOfAnOddShape) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    Tensor x = testing::random_normal({5, 37, 3}, dtype);
    std::vector<double> xv = as_f64(x);
    Shape shape = x.shape();
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::mean, ReduceOp::max}) {
      for (int64_t axis = 0; axis < 3; ++axis) {
        int64_t outer = 1, inner = 1;
        for (int64_t d = 0; d < axis; ++d) outer *= shape[d];
        for (int64_t d = axis + 1; d < 3; ++d) inner *= shape[d];
        Tensor out = ops::reduce(op, x, axis, false);
        double tolerance = dtype == DType::f32 ? 1e-5 : 1e-2;
        EXPECT_LT(rel_error(out, reference(op, xv, outer, shape[axis], inner)), tolerance)
            << "op " << int(op) << " axis " << axis << " " << dtype_name(dtype);
      }
      Tensor whole = ops::reduce(op, x, std::nullopt);
      EXPECT_EQ(whole.numel(), 1);
      EXPECT_LT(rel_error(whole, reference(op, xv, 1, x.numel(), 1)),
                dtype == DType::f32 ? 1e-5 : 1e-2);
    }
  }
}

TEST(Reduce, KeepdimNegativeAxisAndNonContiguousInput) {
  Tensor x = testing::random_normal({4, 6}).transpose(0, 1);  // [6, 4] strided
  Tensor s = ops::sum(x, -1, true);
  EXPECT_EQ(s.shape(), (Shape{6, 1}));
  std::vector<double> xv = as_f64(x);
  EXPECT_LT(rel_error(s, reference(ReduceOp::sum, xv, 6, 4, 1)), 1e-6);
  EXPECT_THROW(ops::sum(x, 2), Error);
}

TEST(Reduce, SumToUndoesBroadcasting) {
  Tensor g = testing::random_normal({3, 4, 5});
  Tensor r = ops::sum_to(g, {4, 1});
  EXPECT_EQ(r.shape(), (Shape{4, 1}));
  std::vector<double> gv = as_f64(g), ref(4, 0.0);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 5; ++k) ref[j] += gv[(i * 4 + j) * 5 + k];
  EXPECT_LT(rel_error(r, ref), 1e-6);
}

}  // namespace
}  // namespace infllm
