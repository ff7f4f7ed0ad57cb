// Decode attention (attention/cached_attention.h, decode_attention.h) on fresh random inputs:
// compressed keys grown one token at a time against compress_keys of the whole prefix, the
// decode selection against the training selection's row for the same token, the attention output
// against an f64 restatement written out below; dense and sparse, GQA, positions before the
// first compressed key, below and above topk * block_size. The CUDA kernels against the same
// references, and the CUDA decode selection against the CUDA training selection on the same
// inputs (skipped without a GPU).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "attention/cached_attention.h"
#include "attention/decode_attention.h"
#include "attention/infllm_v2.h"
#include "autograd/node.h"
#include "core/ops.h"
#include "tests/layers/block_choice_check.h"
#include "tests/test_util.h"

namespace infllm {
namespace {

using attention::SparseConfig;
using testing::as_f64;
using testing::rel_error;

// One sequence: q of every position [T, Hq, D] (a decode step uses one row), the key and value
// caches [T, Hkv, D], all with values exactly representable in bf16 (so the GPU sees the CPU's
// inputs), as f32 on the CPU.
struct Sequence {
  int T, Hq, Hkv, D;
  Tensor q, k, v;
};

Tensor bf16_exact(const Shape& shape) {
  return ops::cast(ops::cast(testing::random_normal(shape), DType::bf16), DType::f32);
}

Sequence random_sequence(int T, int Hq, int Hkv, int D) {
  return {T, Hq, Hkv, D, bf16_exact({T, Hq, D}), bf16_exact({T, Hkv, D}), bf16_exact({T, Hkv, D})};
}

AttentionOptions sparse_options(const SparseConfig& cfg) {
  AttentionOptions options;
  options.mode = attention::AttentionMode::sparse;
  options.sparse = cfg;
  return options;
}

AttentionOptions dense_options() {
  AttentionOptions options;
  options.mode = attention::AttentionMode::dense;
  return options;
}

// The training selection's row for token p: cpu::select_blocks_at on the prefix 0 .. p. [Hkv,
// topk].
std::vector<int32_t> training_row(const SparseConfig& cfg, const Sequence& s, int p) {
  attention::AttentionShape shape{1, p + 1, s.Hq, s.Hkv, s.D, float(1.0 / std::sqrt(s.D))};
  Tensor q = s.q.slice(0, 0, p + 1).contiguous(), k = s.k.slice(0, 0, p + 1).contiguous();
  std::vector<int32_t> blocks(size_t(s.Hkv) * cfg.topk);
  attention::cpu::select_blocks_at<float>(cfg, shape, q.data<float>(), k.data<float>(), {p},
                                          blocks.data());
  return blocks;
}

// f64 attention of row p over keys 0 .. p (blocks empty) or the keys <= p of each group's listed
// blocks, written out from the definition: softmax(q . k / sqrt(D)) v.
std::vector<double> reference_row(const Sequence& s, int p, const std::vector<int32_t>& blocks,
                                  int topk, int block_size) {
  const std::vector<double> q = as_f64(s.q), k = as_f64(s.k), v = as_f64(s.v);
  const int G = s.Hq / s.Hkv;
  std::vector<double> out(size_t(s.Hq) * s.D, 0.0);
  for (int h = 0; h < s.Hq; ++h) {
    const int g = h / G;
    std::vector<int> keys;
    for (int j = 0; j <= p; ++j) {
      bool seen = blocks.empty();
      for (int i = 0; i < topk && !seen; ++i) seen = blocks[size_t(g) * topk + i] == j / block_size;
      if (seen) keys.push_back(j);
    }
    std::vector<double> w;
    double mx = -std::numeric_limits<double>::infinity(), z = 0;
    for (int j : keys) {
      double dot = 0;
      for (int d = 0; d < s.D; ++d)
        dot += q[(size_t(p) * s.Hq + h) * s.D + d] * k[(size_t(j) * s.Hkv + g) * s.D + d];
      w.push_back(dot / std::sqrt(double(s.D)));
      mx = std::max(mx, w.back());
    }
    for (double& x : w) z += (x = std::exp(x - mx));
    for (size_t i = 0; i < keys.size(); ++i)
      for (int d = 0; d < s.D; ++d)
        out[size_t(h) * s.D + d] += w[i] / z * v[(size_t(keys[i]) * s.Hkv + g) * s.D + d];
  }
  return out;
}

// Valid (non -1) entries of a block list row.
int listed(const std::vector<int32_t>& blocks, int g, int topk) {
  return int(std::count_if(blocks.begin() + g * topk, blocks.begin() + (g + 1) * topk,
                           [](int32_t b) { return b >= 0; }));
}

// kernel 8 / stride 4 / blocks of 16: the first compressed key completes at token 7; topk 4 with
// one init block and a 2-block window leaves blocks out from position 64 on.
SparseConfig small_config() {
  SparseConfig cfg;
  cfg.kernel_size = 8;
  cfg.kernel_stride = 4;
  cfg.block_size = 16;
  cfg.init_blocks = 1;
  cfg.window_size = 32;
  cfg.topk = 4;
  cfg.dense_len = 0;
  return cfg;
}

TEST(DecodeAttentionCpu, CompressedKeysGrownOneTokenAtATimeEqualThePrefixCompression) {
  const SparseConfig cfg = small_config();
  const Sequence s = random_sequence(150, 4, 2, 16);
  Tensor kc = Tensor::empty({attention::num_kernels(cfg, s.T), s.Hkv, s.D}, DType::f32);
  for (int t = 0; t < s.T; ++t) {
    append_compressed_keys(s.k, kc, t, t + 1, cfg);
    const int n = attention::num_kernels(cfg, t + 1);
    if (n == 0) continue;
    attention::AttentionShape prefix{1, t + 1, s.Hq, s.Hkv, s.D, 0.25f};
    std::vector<float> ref(size_t(n) * s.Hkv * s.D);
    Tensor k = s.k.slice(0, 0, t + 1).contiguous();
    attention::cpu::compress_keys<float>(cfg, prefix, k.data<float>(), ref.data());
    const std::vector<float> got = kc.slice(0, 0, n).to_vector<float>();
    ASSERT_EQ(got, ref) << "after token " << t;  // the same f64 sums, rounded the same way
  }
  // Appending a range at once (a prompt) writes the same rows.
  Tensor at_once = Tensor::empty(kc.shape(), DType::f32);
  append_compressed_keys(s.k, at_once, 0, s.T, cfg);
  EXPECT_EQ(at_once.to_vector<float>(), kc.to_vector<float>());
}

TEST(DecodeAttentionCpu, SparseRowsSelectTheTrainingBlocksAndMatchTheF64Reference) {
  const SparseConfig cfg = small_config();
  const Sequence s = random_sequence(200, 8, 2, 16);  // G = 4
  Tensor kc = Tensor::empty({attention::num_kernels(cfg, s.T), s.Hkv, s.D}, DType::f32);
  append_compressed_keys(s.k, kc, 0, s.T, cfg);
  for (int p : {0, 5, 7, 20, 40, 63, 64, 100, 150, 199}) {
    Tensor q = s.q.select(0, p).contiguous();
    const std::vector<int32_t> blocks = select_decode_blocks(q, kc, p, cfg).to_vector<int32_t>();
    EXPECT_EQ(blocks, training_row(cfg, s, p)) << "p=" << p;
    const int causal = p / cfg.block_size + 1;
    for (int g = 0; g < s.Hkv; ++g)  // every causal block while they fit topk, else topk
      EXPECT_EQ(listed(blocks, g, cfg.topk), std::min(causal, cfg.topk)) << "p=" << p;
    const Tensor out = decode_attention(q, s.k, s.v, kc, p, sparse_options(cfg));
    EXPECT_LT(rel_error(out, reference_row(s, p, blocks, cfg.topk, cfg.block_size)), 1e-5)
        << "p=" << p;
  }
}

TEST(DecodeAttentionCpu, DenseRowsMatchTheF64Reference) {
  const Sequence s = random_sequence(130, 6, 3, 8);  // G = 2
  for (int p : {0, 1, 17, 64, 129}) {
    Tensor q = s.q.select(0, p).contiguous();
    const Tensor out = decode_attention(q, s.k, s.v, Tensor(), p, dense_options());
    EXPECT_LT(rel_error(out, reference_row(s, p, {}, 0, 1)), 1e-5) << "p=" << p;
  }
  // f64 inputs: the same loops to rounding (the scale 1/sqrt(8) is an f32 value, as in training).
  Sequence s64 = s;
  s64.q = ops::cast(s.q, DType::f64);
  s64.k = ops::cast(s.k, DType::f64);
  s64.v = ops::cast(s.v, DType::f64);
  Tensor q = s64.q.select(0, 100).contiguous();
  EXPECT_LT(rel_error(decode_attention(q, s64.k, s64.v, Tensor(), 100, dense_options()),
                      reference_row(s, 100, {}, 0, 1)),
            1e-7);
}

TEST(DecodeAttentionCpu, AutoModeSwitchesAtDenseLenLikeAFullSequence) {
  SparseConfig cfg = small_config();
  cfg.dense_len = 100;
  AttentionOptions options = sparse_options(cfg);
  options.mode = attention::AttentionMode::automatic;
  EXPECT_FALSE(decode_uses_sparse(options, 99));  // 100 tokens: dense
  EXPECT_TRUE(decode_uses_sparse(options, 100));  // 101 tokens: sparse
  options.variant = attention::AttentionVariant::nsa;
  EXPECT_FALSE(decode_uses_sparse(options, 1000));
}

TEST(DecodeAttentionCpu, ErrorsNameTheProblem) {
  const Sequence s = random_sequence(40, 4, 2, 8);
  Tensor q = s.q.select(0, 3).contiguous();
  testing::expect_error([&] { decode_attention(q, s.k, s.v, Tensor(), 40, dense_options()); },
                        {"position 40", "cache of 40"});
  testing::expect_error(
      [&] { decode_attention(q, s.k, s.v, Tensor(), 30, sparse_options(small_config())); },
      {"compressed keys"});
  Tensor small_kc = Tensor::empty({2, s.Hkv, s.D}, DType::f32);
  testing::expect_error([&] { append_compressed_keys(s.k, small_kc, 0, 40, small_config()); },
                        {"do not fit"});
}

// ---- CUDA ----------------------------------------------------------------------------------

struct GpuSequence {
  Tensor q, k, v;  // bf16 on the GPU, the CPU sequence's values
};

GpuSequence to_gpu(const Sequence& s) {
  auto up = [](const Tensor& x) { return ops::cast(x, DType::bf16).to(Device::cuda()); };
  return {up(s.q), up(s.k), up(s.v)};
}

TEST(DecodeAttentionCuda, CompressedKeysGrownOneTokenAtATimeEqualCompressKeysBitForBit) {
  INFLLM_REQUIRE_GPU();
  SparseConfig cfg;  // 32 / 16
  const Sequence s = random_sequence(700, 16, 2, 64);
  const GpuSequence gs = to_gpu(s);
  const int nk = attention::num_kernels(cfg, s.T);
  Tensor kc = Tensor::empty({nk, s.Hkv, s.D}, DType::bf16, Device::cuda());
  for (int t = 0; t < s.T; ++t) append_compressed_keys(gs.k, kc, t, t + 1, cfg);
  Tensor ref = Tensor::empty({nk, s.Hkv, s.D}, DType::bf16, Device::cuda());
  attention::AttentionShape shape{1, s.T, s.Hq, s.Hkv, s.D, 0.125f};
  attention::cuda::compress_keys(cfg, shape, bf16_bits(gs.k), bf16_bits(ref),
                                 device_stream(Device::cuda()));
  const std::vector<double> got = as_f64(kc), want = as_f64(ref);
  EXPECT_EQ(got, want);
}

// GPU rows against the CPU reference: the selection (>= 99% of entries, f32 scores on bf16
// compressed keys against f64 on f32 ones) and the attention output given the GPU's own lists.
void check_gpu_rows(const SparseConfig& cfg, int T, int Hq, int Hkv, int D,
                    const std::vector<int>& positions) {
  const Sequence s = random_sequence(T, Hq, Hkv, D);
  const GpuSequence gs = to_gpu(s);
  Tensor kc = Tensor::empty({attention::num_kernels(cfg, T), Hkv, D}, DType::f32);
  append_compressed_keys(s.k, kc, 0, T, cfg);
  Tensor gkc = Tensor::empty(kc.shape(), DType::bf16, Device::cuda());
  append_compressed_keys(gs.k, gkc, 0, T, cfg);
  size_t common = 0, chosen = 0;
  for (int p : positions) {
    Tensor q = gs.q.select(0, p).contiguous();
    const std::vector<int32_t> blocks = select_decode_blocks(q, gkc, p, cfg).to_vector<int32_t>();
    const std::vector<int32_t> ref = training_row(cfg, s, p);
    const attention::BlockOverlap o =
        attention::block_overlap(blocks.data(), ref.data(), size_t(Hkv), cfg.topk);
    common += o.common;
    chosen += o.in_a;
    for (int g = 0; g < Hkv; ++g)
      EXPECT_EQ(listed(blocks, g, cfg.topk), std::min(p / cfg.block_size + 1, cfg.topk));
    const Tensor sparse = decode_attention(q, gs.k, gs.v, gkc, p, sparse_options(cfg));
    EXPECT_LT(rel_error(sparse, reference_row(s, p, blocks, cfg.topk, cfg.block_size)), 1e-2)
        << "sparse p=" << p << " Hq=" << Hq << " D=" << D;
    const Tensor dense = decode_attention(q, gs.k, gs.v, Tensor(), p, dense_options());
    EXPECT_LT(rel_error(dense, reference_row(s, p, {}, 0, 1)), 1e-2)
        << "dense p=" << p << " Hq=" << Hq << " D=" << D;
  }
  EXPECT_GE(double(common) / double(chosen), 0.99) << common << " of " << chosen;
}

TEST(DecodeAttentionCuda, RowsMatchTheCpuReferenceAtD64) {
  INFLLM_REQUIRE_GPU();
  SparseConfig cfg;
  cfg.window_size = 128;
  cfg.topk = 6;
  // Before the first compressed key (31), below topk * 64 = 384 (every block), above it.
  check_gpu_rows(cfg, 3000, 16, 2, 64, {0, 20, 31, 200, 383, 384, 1000, 2047, 2999});
}

TEST(DecodeAttentionCuda, RowsMatchTheCpuReferenceAtD128WithGroupsOf16) {
  INFLLM_REQUIRE_GPU();
  SparseConfig cfg;
  cfg.window_size = 256;
  cfg.topk = 8;
  check_gpu_rows(cfg, 2500, 32, 2, 128, {5, 511, 512, 1300, 2499});
  check_gpu_rows(cfg, 600, 4, 4, 128, {100, 599});  // G = 1
}

// The decode selection and the training selection (select_attention_blocks) on the very same bf16
// q and compressed keys, every row of a sequence with the generate test's shape (D = 64, blocks
// of 64, one free block per row) at G = 2 and G = 8: each list is the f64 choice on those inputs
// up to f32 rounding (block_choice_check.h), so the two differ at most at such ties.
TEST(DecodeAttentionCuda, SelectionIsTheTrainingSelectionOnTheSameInputs) {
  INFLLM_REQUIRE_GPU();
  SparseConfig cfg;
  cfg.window_size = 128;
  cfg.topk = 4;
  for (const int Hq : {4, 16}) {
    const int T = 1000, Hkv = 2, D = 64, row = Hkv * cfg.topk;
    const Sequence s = random_sequence(T, Hq, Hkv, D);
    const GpuSequence gs = to_gpu(s);
    Tensor gkc =
        Tensor::empty({attention::num_kernels(cfg, T), Hkv, D}, DType::bf16, Device::cuda());
    append_compressed_keys(gs.k, gkc, 0, T, cfg);
    const std::vector<int32_t> training =
        select_attention_blocks(gs.q.reshape({1, T, Hq, D}), gs.k.reshape({1, T, Hkv, D}), cfg)
            .to_vector<int32_t>();
    const std::vector<double> q = as_f64(gs.q), kc = as_f64(gkc);
    int equal = 0;
    for (int p = 0; p < T; ++p) {
      testing::TokenSelection decode;
      decode.position = p;
      decode.q.assign(q.begin() + ptrdiff_t(p) * Hq * D, q.begin() + ptrdiff_t(p + 1) * Hq * D);
      decode.kc.assign(kc.begin(),
                       kc.begin() + ptrdiff_t(attention::num_kernels(cfg, p + 1)) * Hkv * D);
      decode.blocks =
          select_decode_blocks(gs.q.select(0, p).contiguous(), gkc, p, cfg).to_vector<int32_t>();
      testing::TokenSelection train = decode;
      train.blocks.assign(training.begin() + ptrdiff_t(p) * row,
                          training.begin() + ptrdiff_t(p + 1) * row);
      const attention::AttentionShape shape = testing::token_shape(Hq, Hkv, D, p);
      testing::expect_exact_on_own_inputs(cfg, shape, decode, "decode selection");
      testing::expect_exact_on_own_inputs(cfg, shape, train, "training selection");
      equal += decode.blocks == train.blocks;
    }
    std::printf("decode and training selections equal on %d of %d rows at G=%d\n", equal, T,
                Hq / Hkv);
  }
}

// q = 0 makes every compressed key equally likely, so every free block ties: the list must be
// the forced blocks plus the lowest-index others, as the training selection takes them, at a
// small and a large topk (the radix select's ranks reach past one digit's 256 values).
TEST(DecodeAttentionCuda, TiedScoresGoToTheLowestBlocks) {
  INFLLM_REQUIRE_GPU();
  for (const int topk : {6, 300}) {
    SparseConfig cfg;
    cfg.window_size = 128;
    cfg.topk = topk;
    Sequence s = random_sequence(30000, 8, 2, 64);
    s.q = ops::zeros(s.q.shape());
    const GpuSequence gs = to_gpu(s);
    Tensor gkc =
        Tensor::empty({attention::num_kernels(cfg, s.T), s.Hkv, s.D}, DType::bf16, Device::cuda());
    append_compressed_keys(gs.k, gkc, 0, s.T, cfg);
    for (const int p : {500, 19999, 29999}) {
      const std::vector<int32_t> blocks =
          select_decode_blocks(gs.q.select(0, p).contiguous(), gkc, p, cfg).to_vector<int32_t>();
      EXPECT_EQ(blocks, training_row(cfg, s, p)) << "topk " << topk << ", position " << p;
    }
  }
}

// A long cache: the dense path splits it over many CTAs and combines them.
TEST(DecodeAttentionCuda, LongDenseCacheSplitsAndCombines) {
  INFLLM_REQUIRE_GPU();
  SparseConfig cfg;
  check_gpu_rows(cfg, 20000, 8, 1, 64, {19999});
}

}  // namespace
}  // namespace infllm
