// CUDA kernels against the CPU backend on fresh random inputs made on the CPU and copied over.
// Float results are compared with the CPU kernel run in f64 on the exact same (f32- or
// bf16-rounded) inputs: relative L2 error < 1e-5 for f32, < 1e-2 for bf16. Copies, casts,
// gathers, fills and Philox draws must match the CPU bit for bit.
#include <cstring>
#include <functional>
#include <string>

#include "core/kernels/elementwise.h"
#include "core/kernels/embedding.h"
#include "core/kernels/fill.h"
#include "core/kernels/matmul.h"
#include "core/kernels/reduce.h"
#include "core/kernels/softmax.h"
#include "tests/test_util.h"

namespace infllm {
namespace {

using testing::rel_error;

const Device gpu = Device::cuda(0);
const DType float_dtypes[] = {DType::f32, DType::bf16};

double tolerance(DType dtype) {
  return dtype == DType::f32 ? 1e-5 : 1e-2;
}

// The exact values of x as an f64 CPU tensor: the input of the reference.
Tensor f64(const Tensor& x) {
  return ops::cast(x.to(Device::cpu()).contiguous(), DType::f64);
}

std::vector<double> values(const Tensor& x) {
  return f64(x).to_vector<double>();
}

std::vector<uint8_t> bytes(const Tensor& x) {
  Tensor host = x.to(Device::cpu()).contiguous();
  std::vector<uint8_t> out(host.nbytes());
  std::memcpy(out.data(), host.data_ptr(), out.size());
  return out;
}

using testing::expect_error;

// Views that exercise both elementwise paths: the vectorized contiguous one (with a tail), and
// the strided one (transposes, misaligned slices, size-1 dims).
struct View {
  const char* name;
  Shape shape;
  std::function<Tensor(const Tensor&)> apply;
};

const View views[] = {
    {"contiguous, odd length", {100003}, [](const Tensor& t) { return t; }},
    {"transposed", {37, 129}, [](const Tensor& t) { return t.transpose(0, 1); }},
    {"misaligned slice", {1001}, [](const Tensor& t) { return t.slice(0, 1, 1001); }},
    {"size-1 dims permuted",
     {1, 5, 1, 3},
     [](const Tensor& t) {
       return t.permute({3, 0, 2, 1});
     }},
};

Tensor random_input(const Shape& shape, DType dtype, bool positive) {
  return positive ? testing::random_uniform(shape, 0.1, 4.0, dtype)
                  : testing::random_normal(shape, dtype, Device::cpu(), 2.0);
}

TEST(GpuParity, UnaryOpsOnEveryView) {
  INFLLM_REQUIRE_GPU();
  for (int o = 0; o <= int(UnaryOp::square); ++o) {
    UnaryOp op = UnaryOp(o);
    bool positive = op == UnaryOp::log || op == UnaryOp::sqrt || op == UnaryOp::rsqrt;
    for (DType dtype : float_dtypes) {
      for (const View& view : views) {
        Tensor x = random_input(view.shape, dtype, positive);
        Tensor out = ops::unary(op, view.apply(x.to(gpu)));
        Tensor ref = ops::unary(op, f64(view.apply(x)));
        EXPECT_LT(rel_error(out, values(ref)), tolerance(dtype))
            << unary_op_name(op) << " " << dtype_name(dtype) << " " << view.name;
      }
    }
  }
}

TEST(GpuParity, BinaryOpsBroadcastAndStrided) {
  INFLLM_REQUIRE_GPU();
  struct Case {
    Shape a, b;
    bool transpose_a;
  };
  const Case cases[] = {{{3, 10007}, {3, 10007}, false},  // vectorized path
                        {{4, 1, 37}, {5, 37}, false},     // both broadcast
                        {{65, 33}, {33, 1}, true},        // transposed a, broadcast b
                        {{1}, {7, 1, 3}, false}};
  for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div}) {
    for (DType dtype : float_dtypes) {
      for (const Case& c : cases) {
        Tensor a = random_input(c.a, dtype, false);
        Tensor b = random_input(c.b, dtype, op == BinaryOp::div);
        auto view_a = [&](const Tensor& t) { return c.transpose_a ? t.transpose(0, 1) : t; };
        Tensor out = ops::binary(op, view_a(a.to(gpu)), b.to(gpu));
        Tensor ref = ops::binary(op, f64(view_a(a)), f64(b));
        EXPECT_EQ(out.shape(), ref.shape());
        EXPECT_LT(rel_error(out, values(ref)), tolerance(dtype))
            << binary_op_name(op) << " " << dtype_name(dtype) << " " << shape_str(c.a) << " "
            << shape_str(c.b);
      }
    }
  }
}

TEST(GpuParity, BinaryScalarOnEveryView) {
  INFLLM_REQUIRE_GPU();
  for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div}) {
    for (DType dtype : float_dtypes) {
      for (const View& view : views) {
        Tensor x = random_input(view.shape, dtype, false);
        Tensor in = view.apply(x.to(gpu));
        Tensor out = Tensor::empty(in.shape(), dtype, gpu);
        cuda::binary_scalar(op, in, -1.75, out);
        Tensor ref = Tensor::empty(in.shape(), DType::f64);
        cpu::binary_scalar(op, f64(view.apply(x)), -1.75, ref);
        EXPECT_LT(rel_error(out, values(ref)), tolerance(dtype))
            << binary_op_name(op) << " " << dtype_name(dtype) << " " << view.name;
      }
    }
  }
}

TEST(GpuParity, InPlaceAccumulateWithBroadcastAndCast) {
  INFLLM_REQUIRE_GPU();
  for (DType acc_dtype : float_dtypes) {
    for (DType x_dtype : float_dtypes) {
      Tensor acc = random_input({6, 129}, acc_dtype, false);
      Tensor x = random_input({129}, x_dtype, false);
      Tensor acc_gpu = acc.to(gpu);
      ops::add_(acc_gpu, x.to(gpu));
      // The addend is rounded to the accumulator's dtype first, as add_ does.
      Tensor ref = ops::add(f64(acc), f64(ops::cast(x, acc_dtype)));
      EXPECT_LT(rel_error(acc_gpu, values(ref)), tolerance(acc_dtype))
          << dtype_name(acc_dtype) << " += " << dtype_name(x_dtype);
    }
  }
}

TEST(GpuParity, CastBetweenAllDtypesBitExact) {
  INFLLM_REQUIRE_GPU();
  const DType dtypes[] = {DType::f32, DType::bf16, DType::i32, DType::i64, DType::u16, DType::u32};
  // Non-negative with fractions: valid for every target, and float -> int truncation is tested.
  Tensor source = testing::random_uniform({129, 77}, 0.0, 60000.0, DType::f64);
  for (DType from : dtypes) {
    Tensor x = ops::cast(source, from);
    for (DType to : dtypes) {
      EXPECT_EQ(bytes(ops::cast(x.to(gpu), to)), bytes(ops::cast(x, to)))
          << dtype_name(from) << " -> " << dtype_name(to);
      Tensor strided = Tensor::empty({77, 129}, to, gpu);
      cuda::cast(x.to(gpu).transpose(0, 1), strided);
      Tensor strided_ref = Tensor::empty({77, 129}, to);
      cpu::cast(x.transpose(0, 1), strided_ref);
      EXPECT_EQ(bytes(strided), bytes(strided_ref))
          << "transposed " << dtype_name(from) << " -> " << dtype_name(to);
    }
  }
}

TEST(GpuParity, CopyStridedIntoStridedDestinationBitExact) {
  INFLLM_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16, DType::i64, DType::f64}) {
    Tensor src = ops::cast(testing::random_normal({6, 7, 9}, DType::f64), dtype);
    Tensor row = ops::cast(testing::random_normal({7}, DType::f64), dtype);
    Tensor big = ops::cast(testing::random_normal({9, 6, 14}, DType::f64), dtype);
    Tensor big_gpu = big.to(gpu);
    // Permuted source into a slice of the last axis: neither side is contiguous, and the
    // elements outside the slice must stay untouched.
    Tensor dst = big.slice(2, 3, 10), dst_gpu = big_gpu.slice(2, 3, 10);
    cpu::copy_strided(src.permute({2, 0, 1}), dst);
    cuda::copy_strided(src.to(gpu).permute({2, 0, 1}), dst_gpu);
    EXPECT_EQ(bytes(big_gpu), bytes(big)) << dtype_name(dtype);
    // A stride-0 broadcast source, and the contiguous fast path.
    Tensor spread = Tensor::empty({5, 7}, dtype, gpu);
    cuda::copy_strided(row.to(gpu).as_strided({5, 7}, {0, 1}), spread);
    Tensor spread_ref = Tensor::empty({5, 7}, dtype);
    cpu::copy_strided(row.as_strided({5, 7}, {0, 1}), spread_ref);
    EXPECT_EQ(bytes(spread), bytes(spread_ref)) << dtype_name(dtype);
    EXPECT_EQ(bytes(src.to(gpu).clone()), bytes(src)) << dtype_name(dtype);
  }
}

TEST(GpuParity, ReductionsOverEveryAxisKind) {
  INFLLM_REQUIRE_GPU();
  struct Case {
    Shape shape;
    std::optional<int64_t> axis;
  };
  const Case cases[] = {{{3, 1000, 5}, 1}, {{2, 4097}, 1}, {{70, 33}, -1}, {{4097, 3}, 0},
                        {{2, 3, 4}, {}},   {{1, 1, 1}, 0}, {{50000}, {}},  {{5, 1, 7}, 1}};
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::mean, ReduceOp::max}) {
    for (DType dtype : float_dtypes) {
      for (const Case& c : cases) {
        Tensor x = testing::random_uniform(c.shape, -1.0, 2.0, dtype);
        Tensor out = ops::reduce(op, x.to(gpu), c.axis);
        Tensor ref = ops::reduce(op, f64(x), c.axis);
        EXPECT_EQ(out.shape(), ref.shape());
        EXPECT_LT(rel_error(out, values(ref)), tolerance(dtype))
            << int(op) << " " << dtype_name(dtype) << " " << shape_str(c.shape);
      }
    }
  }
}

TEST(GpuParity, ReductionsAreDeterministic) {
  INFLLM_REQUIRE_GPU();
  Tensor x = testing::random_normal({3, 20000, 17}, DType::f32, gpu);
  EXPECT_EQ(bytes(ops::sum(x, 1)), bytes(ops::sum(x, 1)));
  EXPECT_EQ(bytes(ops::sum(x)), bytes(ops::sum(x)));
}

TEST(GpuParity, SoftmaxAndLogSoftmaxWithBackward) {
  INFLLM_REQUIRE_GPU();
  const Shape shapes[] = {{5, 37}, {3, 1500}, {2, 50257}, {1}, {4, 1}, {2, 3, 1025}};
  for (bool log : {false, true}) {
    for (DType dtype : float_dtypes) {
      for (const Shape& shape : shapes) {
        Tensor x = testing::random_normal(shape, dtype, Device::cpu(), 3.0);
        Tensor y = log ? ops::log_softmax(x.to(gpu)) : ops::softmax(x.to(gpu));
        Tensor y_ref = log ? ops::log_softmax(f64(x)) : ops::softmax(f64(x));
        EXPECT_LT(rel_error(y, values(y_ref)), tolerance(dtype))
            << (log ? "log_softmax " : "softmax ") << dtype_name(dtype) << " " << shape_str(shape);
        Tensor dy = testing::random_normal(shape, dtype);
        Tensor dx = ops::softmax_backward(y, dy.to(gpu), log);
        Tensor dx_ref = ops::softmax_backward(f64(y), f64(dy), log);
        EXPECT_LT(rel_error(dx, values(dx_ref)), tolerance(dtype))
            << (log ? "log_softmax" : "softmax") << " backward " << dtype_name(dtype) << " "
            << shape_str(shape);
      }
    }
  }
}

TEST(GpuParity, MatmulTransposesBatchBroadcastAndAccumulation) {
  INFLLM_REQUIRE_GPU();
  const int64_t m = 37, n = 65, k = 129;
  struct Batches {
    int64_t a, b, out;
  };
  const Batches batches[] = {{3, 3, 3}, {1, 3, 3}, {3, 1, 3}, {1, 1, 1}};
  const std::pair<DType, DType> dtypes[] = {
      {DType::f32, DType::f32}, {DType::bf16, DType::bf16}, {DType::bf16, DType::f32}};
  for (auto [in_dtype, out_dtype] : dtypes) {
    for (bool trans_a : {false, true}) {
      for (bool trans_b : {false, true}) {
        for (Batches batch : batches) {
          for (float beta : {0.0f, 1.0f}) {
            MatmulArgs args{trans_a, trans_b, beta == 0.0f ? 1.0f : 0.5f, beta};
            Shape shape_a = trans_a ? Shape{batch.a, k, m} : Shape{batch.a, m, k};
            Shape shape_b = trans_b ? Shape{batch.b, n, k} : Shape{batch.b, k, n};
            Tensor a = testing::random_normal(shape_a, in_dtype);
            Tensor b = testing::random_normal(shape_b, in_dtype);
            Tensor prior = testing::random_normal({batch.out, m, n}, out_dtype);
            Tensor out = prior.to(gpu);
            cuda::matmul(a.to(gpu), b.to(gpu), out, args);
            Tensor ref = f64(prior);
            cpu::matmul(f64(a), f64(b), ref, args);
            EXPECT_LT(rel_error(out, values(ref)), tolerance(out_dtype))
                << dtype_name(in_dtype) << " -> " << dtype_name(out_dtype) << " trans_a=" << trans_a
                << " trans_b=" << trans_b << " batches " << batch.a << "," << batch.b
                << " beta=" << beta;
          }
        }
      }
    }
  }
}

TEST(GpuParity, MatmulThroughOpsWithSharedWeight) {
  INFLLM_REQUIRE_GPU();
  for (DType dtype : float_dtypes) {
    Tensor x = testing::random_normal({2, 300, 257}, dtype);
    Tensor w = testing::random_normal({513, 257}, dtype);  // [N, K]: x @ w^T, as a Linear does
    Tensor out = ops::matmul(x.to(gpu), w.to(gpu), false, true);
    Tensor ref = ops::matmul(f64(x), f64(w), false, true);
    EXPECT_EQ(out.shape(), (Shape{2, 300, 513}));
    EXPECT_LT(rel_error(out, values(ref)), tolerance(dtype)) << dtype_name(dtype);
  }
}

Tensor random_indices(int64_t count, int64_t vocab) {
  return ops::cast(testing::random_uniform({count}, 0.0, double(vocab), DType::f64), DType::i32);
}

TEST(GpuParity, EmbeddingForwardBitExact) {
  INFLLM_REQUIRE_GPU();
  for (DType dtype : float_dtypes) {
    for (int64_t width : {77, 128}) {  // 128: 16-byte rows; 77: element-wise copies
      Tensor table = testing::random_normal({1000, width}, dtype);
      Tensor index = random_indices(513, 1000).view({27, 19});
      Tensor out = ops::embedding(table.to(gpu), index.to(gpu));
      EXPECT_EQ(out.shape(), (Shape{27, 19, width}));
      EXPECT_EQ(bytes(out), bytes(ops::embedding(table, index)))
          << dtype_name(dtype) << " width " << width;
    }
  }
}

TEST(GpuParity, EmbeddingBackwardAccumulatesDeterministically) {
  INFLLM_REQUIRE_GPU();
  const int64_t vocab = 60, count = 2000;  // every row is hit ~33 times
  for (DType table_dtype : float_dtypes) {
    for (DType grad_dtype : float_dtypes) {
      for (int64_t width : {77, 300}) {
        Tensor index = random_indices(count, vocab);
        Tensor dout = testing::random_normal({count, width}, grad_dtype);
        Tensor dtable = testing::random_normal({vocab, width}, table_dtype);
        Tensor first = dtable.to(gpu), second = dtable.to(gpu);
        ops::embedding_backward_into(index.to(gpu), dout.to(gpu), first);
        ops::embedding_backward_into(index.to(gpu), dout.to(gpu), second);
        Tensor ref = f64(dtable);
        cpu::embedding_backward(index, f64(dout), ref);
        EXPECT_LT(rel_error(first, values(ref)), tolerance(table_dtype))
            << dtype_name(table_dtype) << " += " << dtype_name(grad_dtype) << " width " << width;
        EXPECT_EQ(bytes(first), bytes(second)) << "two runs differ";
      }
    }
  }
}

TEST(GpuParity, EmbeddingBadIndexIsReportedWithPositionAndValue) {
  INFLLM_REQUIRE_GPU();
  std::vector<int32_t> ids(40);
  for (int i = 0; i < 40; ++i) ids[i] = (i * 37) % 1000;
  ids[5] = -3;
  ids[9] = 1000;
  Tensor index = Tensor::from_vector(ids, {40}, gpu);
  Tensor table = testing::random_normal({1000, 64}, DType::f32, gpu);
  expect_error([&] { ops::embedding(table, index); },
               {"index -3 at position 5", "[0, 1000)", "vocab_size"});
  Tensor dtable = ops::zeros({1000, 64}, DType::f32, gpu);
  Tensor dout = testing::random_normal({40, 64}, DType::f32, gpu);
  expect_error([&] { ops::embedding_backward_into(index, dout, dtable); },
               {"index -3 at position 5", "[0, 1000)"});
  EXPECT_EQ(ops::sum(dtable).item(), 0.0) << "dtable written despite a bad index";
  ids[5] = 17;
  expect_error([&] { ops::embedding(table, Tensor::from_vector(ids, {40}, gpu)); },
               {"index 1000 at position 9"});
  ids[9] = 999;  // the device is still usable after the errors
  EXPECT_EQ(ops::embedding(table, Tensor::from_vector(ids, {40}, gpu)).shape(), (Shape{40, 64}));
}

TEST(GpuParity, RandomDrawsBitIdenticalToCpu) {
  INFLLM_REQUIRE_GPU();
  const std::pair<uint64_t, uint64_t> streams[] = {
      {0, 0}, {1234567, 12345}, {(uint64_t(1) << 40) + 17, (uint64_t(1) << 33) + 5}};
  for (auto [seed, offset] : streams) {
    for (int64_t size : {int64_t(1), int64_t(1001), int64_t(1) << 20}) {
      for (DType dtype : float_dtypes) {
        RandomArgs uniform{RandomKind::uniform, seed, offset, -2.0, 3.0};
        RandomArgs normal{RandomKind::normal, seed, offset, 0.5, 2.0};
        for (const RandomArgs& args : {uniform, normal}) {
          EXPECT_EQ(bytes(ops::random({size}, args, dtype, gpu)),
                    bytes(ops::random({size}, args, dtype)))
              << (args.kind == RandomKind::uniform ? "uniform" : "normal") << " seed " << seed
              << " offset " << offset << " size " << size << " " << dtype_name(dtype);
        }
      }
    }
  }
}

TEST(GpuParity, FillAndArangeBitIdenticalToCpu) {
  INFLLM_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16, DType::i32, DType::i64, DType::u16, DType::u32}) {
    EXPECT_EQ(bytes(ops::full({1001}, 3.7, dtype, gpu)), bytes(ops::full({1001}, 3.7, dtype)))
        << dtype_name(dtype);
    EXPECT_EQ(bytes(ops::arange(5000, dtype, gpu)), bytes(ops::arange(5000, dtype)))
        << dtype_name(dtype);
    Tensor range = Tensor::empty({777}, dtype, gpu), range_ref = Tensor::empty({777}, dtype);
    double start = dtype == DType::u16 || dtype == DType::u32 ? 3.5 : -3.5;
    cuda::arange(range, start, 0.3);
    cpu::arange(range_ref, start, 0.3);
    EXPECT_EQ(bytes(range), bytes(range_ref)) << dtype_name(dtype);
  }
}

TEST(GpuParity, F64TensorsAreRejectedWithTheOpName) {
  INFLLM_REQUIRE_GPU();
  Tensor x = Tensor::empty({4}, DType::f64, gpu);
  Tensor out = Tensor::empty({4}, DType::f64, gpu);
  expect_error([&] { cuda::unary(UnaryOp::exp, x, out); }, {"exp", "f64", "CPU-only"});
  Tensor out32 = Tensor::empty({4}, DType::f32, gpu);
  expect_error([&] { cuda::cast(x, out32); }, {"cast", "f64"});
}

}  // namespace
}  // namespace infllm
