// Causal flash attention, dense and block-sparse: the CPU reference against a naive f64 masked
// softmax written out below, finite differences for the backward, and the CUDA bf16 kernels
// against the CPU reference in f64 on the same bf16-rounded inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "attention/flash_attention.h"
#include "core/bf16.h"
#include "core/error.h"
#include "tests/test_util.h"

#if INFLLM_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace infllm::attention {
namespace {

struct Case {
  int B, T, Hq, Hkv, D;
  int block_size;  // 0: dense
  int max_blocks;
};

std::mt19937_64& rng() {
  static std::mt19937_64 gen(std::random_device{}());
  return gen;
}

std::vector<double> randn(size_t n) {
  std::normal_distribution<double> dist;
  std::vector<double> x(n);
  for (double& v : x) v = dist(rng());
  return x;
}

// Random valid block lists: t's own block, then random earlier blocks (the first one with
// probability 1/2), ascending, padded with -1.
std::vector<int32_t> random_blocks(const Case& c) {
  std::vector<int32_t> blocks(size_t(c.B) * c.T * c.Hkv * c.max_blocks, -1);
  for (int b = 0; b < c.B; ++b)
    for (int t = 0; t < c.T; ++t)
      for (int g = 0; g < c.Hkv; ++g) {
        const int own = t / c.block_size;
        std::vector<int32_t> chosen = {own};
        if (own > 0 && rng()() % 2) chosen.push_back(0);
        std::vector<int32_t> earlier;
        for (int j = 1; j < own; ++j) earlier.push_back(j);
        std::shuffle(earlier.begin(), earlier.end(), rng());
        for (size_t i = 0; i < earlier.size() && int(chosen.size()) < c.max_blocks; ++i)
          chosen.push_back(earlier[i]);
        std::sort(chosen.begin(), chosen.end());
        std::copy(chosen.begin(), chosen.end(),
                  blocks.begin() + ((size_t(b) * c.T + t) * c.Hkv + g) * c.max_blocks);
      }
  return blocks;
}

// Every causal block of every token: sparse must then equal dense.
std::vector<int32_t> all_causal_blocks(const Case& c) {
  std::vector<int32_t> blocks(size_t(c.B) * c.T * c.Hkv * c.max_blocks, -1);
  for (size_t list = 0; list < size_t(c.B) * c.T * c.Hkv; ++list) {
    const int t = int(list / c.Hkv % c.T);
    for (int j = 0; j <= t / c.block_size; ++j) blocks[list * c.max_blocks + j] = j;
  }
  return blocks;
}

AttentionShape shape_of(const Case& c) {
  return {c.B, c.T, c.Hq, c.Hkv, c.D, float(1.0 / std::sqrt(double(c.D)))};
}

BlockList list_of(const Case& c, const std::vector<int32_t>& blocks) {
  if (c.block_size == 0) return {};
  return {blocks.data(), c.max_blocks, c.block_size};
}

// ---- The naive f64 reference: one full masked score row per (b, h, t). ----
bool allowed(const Case& c, const std::vector<int32_t>& blocks, int b, int t, int g, int key) {
  if (key > t) return false;
  if (c.block_size == 0) return true;
  const int32_t* list = blocks.data() + ((size_t(b) * c.T + t) * c.Hkv + g) * c.max_blocks;
  return std::find(list, list + c.max_blocks, key / c.block_size) != list + c.max_blocks;
}

struct Naive {
  std::vector<double> out, lse, dq, dk, dv;
};

Naive naive_attention(const Case& c, const std::vector<int32_t>& blocks,
                      const std::vector<double>& q, const std::vector<double>& k,
                      const std::vector<double>& v, const std::vector<double>& dout) {
  const int G = c.Hq / c.Hkv, D = c.D;
  const double scale = 1.0 / std::sqrt(double(D));
  Naive r;
  r.out.assign(q.size(), 0.0);
  r.dq.assign(q.size(), 0.0);
  r.lse.assign(size_t(c.B) * c.Hq * c.T, 0.0);
  r.dk.assign(k.size(), 0.0);
  r.dv.assign(v.size(), 0.0);
  auto qi = [&](int b, int t, int h) { return ((size_t(b) * c.T + t) * c.Hq + h) * D; };
  auto ki = [&](int b, int t, int g) { return ((size_t(b) * c.T + t) * c.Hkv + g) * D; };
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.Hq; ++h)
      for (int t = 0; t < c.T; ++t) {
        const int g = h / G;
        std::vector<double> p(c.T, 0.0), dp(c.T, 0.0);
        double mx = -INFINITY;
        for (int j = 0; j < c.T; ++j) {
          if (!allowed(c, blocks, b, t, g, j)) continue;
          double s = 0;
          for (int d = 0; d < D; ++d) s += q[qi(b, t, h) + d] * k[ki(b, j, g) + d];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (int j = 0; j < c.T; ++j)
          if (allowed(c, blocks, b, t, g, j)) sum += std::exp(p[j] - mx);
        double delta = 0;
        for (int j = 0; j < c.T; ++j) {
          p[j] = allowed(c, blocks, b, t, g, j) ? std::exp(p[j] - mx) / sum : 0.0;
          for (int d = 0; d < D; ++d) {
            r.out[qi(b, t, h) + d] += p[j] * v[ki(b, j, g) + d];
            dp[j] += dout[qi(b, t, h) + d] * v[ki(b, j, g) + d];
          }
          delta += p[j] * dp[j];
        }
        r.lse[(size_t(b) * c.Hq + h) * c.T + t] = mx + std::log(sum);
        for (int j = 0; j < c.T; ++j) {
          const double ds = p[j] * (dp[j] - delta) * scale;
          for (int d = 0; d < D; ++d) {
            r.dq[qi(b, t, h) + d] += ds * k[ki(b, j, g) + d];
            r.dk[ki(b, j, g) + d] += ds * q[qi(b, t, h) + d];
            r.dv[ki(b, j, g) + d] += p[j] * dout[qi(b, t, h) + d];
          }
        }
      }
  return r;
}

// Relative L2 error; NaN anywhere (an element never written) is infinitely wrong. A reference that
// is zero everywhere (T = 1: the softmax over one key is constant, so dQ = dK = 0) has no scale,
// so there the error is the RMS of x itself.
template <class A, class B>
double rel_err(const std::vector<A>& x, const std::vector<B>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double diff = double(x[i]) - double(ref[i]);
    num += diff * diff;
    den += double(ref[i]) * double(ref[i]);
  }
  if (std::isnan(num)) return INFINITY;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num / double(ref.size()));
}

template <class T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

const Case kCpuCases[] = {
    {1, 37, 2, 2, 16, 0, 0},   // G=1, dense, odd length
    {2, 50, 4, 2, 8, 0, 0},    // G=2, B=2
    {1, 45, 4, 1, 16, 8, 3},   // G=4, sparse, partial last block
    {1, 40, 16, 1, 8, 4, 4},   // G=16, sparse
    {2, 33, 8, 2, 12, 16, 2},  // G=4, B=2, sparse
};

class CpuAttention : public ::testing::TestWithParam<Case> {};

TEST_P(CpuAttention, ForwardAndBackwardMatchNaiveF64) {
  const Case c = GetParam();
  const auto blocks = c.block_size ? random_blocks(c) : std::vector<int32_t>{};
  const size_t nq = size_t(c.B) * c.T * c.Hq * c.D, nk = size_t(c.B) * c.T * c.Hkv * c.D;
  const auto q = randn(nq), k = randn(nk), v = randn(nk), dout = randn(nq);
  const Naive ref = naive_attention(c, blocks, q, k, v, dout);

  const auto qf = cast<float>(q), kf = cast<float>(k), vf = cast<float>(v), df = cast<float>(dout);
  std::vector<float> out(nq), lse(size_t(c.B) * c.Hq * c.T), dq(nq), dk(nk), dv(nk);
  cpu::attention_forward(shape_of(c), qf.data(), kf.data(), vf.data(), list_of(c, blocks),
                         out.data(), lse.data());
  cpu::attention_backward(shape_of(c), qf.data(), kf.data(), vf.data(), out.data(), lse.data(),
                          df.data(), list_of(c, blocks), dq.data(), dk.data(), dv.data());
  EXPECT_LT(rel_err(out, ref.out), 1e-5);
  EXPECT_LT(rel_err(lse, ref.lse), 1e-5);
  EXPECT_LT(rel_err(dq, ref.dq), 1e-5);
  EXPECT_LT(rel_err(dk, ref.dk), 1e-5);
  EXPECT_LT(rel_err(dv, ref.dv), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuAttention, ::testing::ValuesIn(kCpuCases));

// Gradcheck in f64: loss = sum(out * W), so dout = W; central differences on random elements.
TEST(CpuAttention, BackwardMatchesFiniteDifferences) {
  for (const Case c : {Case{1, 21, 4, 2, 8, 0, 0}, Case{2, 27, 4, 1, 8, 4, 3}}) {
    const auto blocks = c.block_size ? random_blocks(c) : std::vector<int32_t>{};
    const size_t nq = size_t(c.B) * c.T * c.Hq * c.D, nk = size_t(c.B) * c.T * c.Hkv * c.D;
    std::vector<double> q = randn(nq), k = randn(nk), v = randn(nk), w = randn(nq);
    std::vector<double> out(nq), lse(size_t(c.B) * c.Hq * c.T), dq(nq), dk(nk), dv(nk);
    auto loss = [&] {
      cpu::attention_forward(shape_of(c), q.data(), k.data(), v.data(), list_of(c, blocks),
                             out.data(), lse.data());
      double l = 0;
      for (size_t i = 0; i < nq; ++i) l += out[i] * w[i];
      return l;
    };
    loss();
    cpu::attention_backward(shape_of(c), q.data(), k.data(), v.data(), out.data(), lse.data(),
                            w.data(), list_of(c, blocks), dq.data(), dk.data(), dv.data());
    for (auto [x, grad] : {std::pair{&q, &dq}, std::pair{&k, &dk}, std::pair{&v, &dv}}) {
      std::vector<double> numeric, analytic;
      for (int trial = 0; trial < 40; ++trial) {
        const size_t i = rng()() % x->size();
        const double saved = (*x)[i], eps = 1e-5;
        (*x)[i] = saved + eps;
        const double up = loss();
        (*x)[i] = saved - eps;
        const double down = loss();
        (*x)[i] = saved;
        numeric.push_back((up - down) / (2 * eps));
        analytic.push_back((*grad)[i]);
      }
      EXPECT_LT(rel_err(analytic, numeric), 1e-7);
    }
  }
}

TEST(CpuAttention, SparseWithEveryCausalBlockIsDense) {
  const Case c{2, 77, 4, 2, 16, 8, 10};
  const Case dense{c.B, c.T, c.Hq, c.Hkv, c.D, 0, 0};
  const auto blocks = all_causal_blocks(c);
  const size_t nq = size_t(c.B) * c.T * c.Hq * c.D, nk = size_t(c.B) * c.T * c.Hkv * c.D;
  const auto q = cast<float>(randn(nq)), k = cast<float>(randn(nk)), v = cast<float>(randn(nk));
  const auto dout = cast<float>(randn(nq));
  std::vector<float> out[2], lse[2], dq[2], dk[2], dv[2];
  for (int i = 0; i < 2; ++i) {
    const BlockList list = i == 0 ? BlockList{} : list_of(c, blocks);
    out[i].resize(nq), lse[i].resize(size_t(c.B) * c.Hq * c.T);
    dq[i].resize(nq), dk[i].resize(nk), dv[i].resize(nk);
    cpu::attention_forward(shape_of(dense), q.data(), k.data(), v.data(), list, out[i].data(),
                           lse[i].data());
    cpu::attention_backward(shape_of(dense), q.data(), k.data(), v.data(), out[i].data(),
                            lse[i].data(), dout.data(), list, dq[i].data(), dk[i].data(),
                            dv[i].data());
  }
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(lse[0], lse[1]);
  EXPECT_EQ(dq[0], dq[1]);
  EXPECT_EQ(dk[0], dk[1]);
  EXPECT_EQ(dv[0], dv[1]);
}

TEST(CpuAttention, RejectsBadShapes) {
  const float x = 0.f;
  float y = 0.f;
  EXPECT_THROW(cpu::attention_forward<float>({1, 4, 3, 2, 8, 0.3f}, &x, &x, &x, {}, &y, &y), Error);
  EXPECT_THROW(cpu::attention_forward<float>({1, 4, 2, 2, 8, 0.f}, &x, &x, &x, {}, &y, &y), Error);
  const int32_t blocks[1] = {0};
  EXPECT_THROW(
      cpu::attention_forward<float>({1, 1, 1, 1, 8, 0.3f}, &x, &x, &x, {blocks, 0, 64}, &y, &y),
      Error);
}

// ---- CUDA ----
#if INFLLM_WITH_CUDA
// InfLLM-V2's shape of list: the first block, the `local` blocks ending at t's own, random
// earlier ones up to max_blocks.
std::vector<int32_t> windowed_blocks(const Case& c, int local) {
  std::vector<int32_t> blocks(size_t(c.B) * c.T * c.Hkv * c.max_blocks, -1);
  for (size_t list = 0; list < size_t(c.B) * c.T * c.Hkv; ++list) {
    const int own = int(list / c.Hkv % c.T) / c.block_size;
    std::vector<int32_t> chosen = {0}, earlier;
    for (int j = std::max(1, own - local + 1); j <= own; ++j) chosen.push_back(j);
    for (int j = 1; j <= own - local; ++j) earlier.push_back(j);
    std::shuffle(earlier.begin(), earlier.end(), rng());
    for (size_t i = 0; i < earlier.size() && int(chosen.size()) < c.max_blocks; ++i)
      chosen.push_back(earlier[i]);
    std::sort(chosen.begin(), chosen.end());
    std::copy(chosen.begin(), chosen.end(), blocks.begin() + list * c.max_blocks);
  }
  return blocks;
}

// Per 128-token tile, one random set of earlier blocks that all its tokens select, with their
// own block.
std::vector<int32_t> tile_shared_blocks(const Case& c) {
  std::vector<int32_t> blocks(size_t(c.B) * c.T * c.Hkv * c.max_blocks, -1);
  std::vector<int32_t> shared;
  for (size_t list = 0; list < size_t(c.B) * c.T * c.Hkv; ++list) {
    const int t = int(list / c.Hkv % c.T), own = t / c.block_size;
    if (t % 128 == 0 && list % c.Hkv == 0) {  // a new tile: draw its blocks
      shared.clear();
      for (int j = 0; j < t / c.block_size; ++j) shared.push_back(j);
      std::shuffle(shared.begin(), shared.end(), rng());
      shared.resize(std::min<size_t>(shared.size(), c.max_blocks - 2));
    }
    std::vector<int32_t> chosen = shared;
    for (int j = t / 128 * 128 / c.block_size; j <= own; ++j) chosen.push_back(j);
    std::sort(chosen.begin(), chosen.end());
    std::copy(chosen.begin(), chosen.end(), blocks.begin() + list * c.max_blocks);
  }
  return blocks;
}

template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t n) { cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)); }
  ~DeviceBuffer() { cudaFree(ptr); }
};

std::vector<uint16_t> to_bf16(std::vector<double>& x) {  // rounds x in place to bf16 values
  std::vector<uint16_t> bits(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    bits[i] = float_to_bf16(float(x[i])).bits;
    x[i] = bf16_to_float(bf16{bits[i]});
  }
  return bits;
}

std::vector<double> from_bf16(const std::vector<uint16_t>& bits) {
  std::vector<double> x(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) x[i] = bf16_to_float(bf16{bits[i]});
  return x;
}

// One forward + backward on the GPU. packed = false: q, k, v, dq, dk, dv as separate contiguous
// tensors; true: as head ranges of one [B, T, Hq + 2 Hkv, D] buffer (the fused QKV projection's
// layout), read and written through the token strides. Outputs come back as f64 in the separate
// layouts; every output element must be written (the buffers start as NaN).
struct GpuRun {
  std::vector<double> out, dq, dk, dv;
  std::vector<float> lse;
};

// Unsets the kernel-choice variables at the end of a test, also where a failed ASSERT returns.
struct UnsetOnExit {
  std::vector<const char*> variables;
  ~UnsetOnExit() {
    for (const char* variable : variables) unsetenv(variable);
  }
};

void gpu_run(const Case& c, const std::vector<int32_t>& blocks, const std::vector<uint16_t>& q,
             const std::vector<uint16_t>& k, const std::vector<uint16_t>& v,
             const std::vector<uint16_t>& dout, bool packed, GpuRun& r) {
  const size_t rows = size_t(c.B) * c.T, nq = q.size(), nk = k.size(),
               nl = size_t(c.B) * c.Hq * c.T;
  const size_t q_width = size_t(c.Hq) * c.D, kv_width = size_t(c.Hkv) * c.D;
  const size_t width = packed ? q_width + 2 * kv_width : 0;  // elements per token when packed
  // Host layout of the q/k/v (and gradient) buffer, and where each tensor starts in it.
  const size_t n_in = packed ? rows * width : nq + 2 * nk;
  const size_t k_at = packed ? q_width : nq, v_at = packed ? q_width + kv_width : nq + nk;
  auto index = [&](size_t at, size_t row_width, size_t i) {  // element i of a tensor
    return packed ? at + i / row_width * width + i % row_width : at + i;
  };
  std::vector<uint16_t> host(n_in);
  for (size_t i = 0; i < nq; ++i) host[index(0, q_width, i)] = q[i];
  for (size_t i = 0; i < nk; ++i) host[index(k_at, kv_width, i)] = k[i];
  for (size_t i = 0; i < nk; ++i) host[index(v_at, kv_width, i)] = v[i];

  DeviceBuffer<uint16_t> gin(n_in), ggrad(n_in), gdo(nq), go(nq);
  DeviceBuffer<float> glse(nl);
  DeviceBuffer<int32_t> gblocks(blocks.size());
  ASSERT_EQ(cudaMemcpy(gin.ptr, host.data(), n_in * 2, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(gdo.ptr, dout.data(), nq * 2, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(gblocks.ptr, blocks.data(), blocks.size() * 4, cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaMemset(ggrad.ptr, 0xff, n_in * 2), cudaSuccess);
  ASSERT_EQ(cudaMemset(go.ptr, 0xff, nq * 2), cudaSuccess);
  ASSERT_EQ(cudaMemset(glse.ptr, 0xff, nl * 4), cudaSuccess);

  AttentionShape shape = shape_of(c);
  if (packed) shape.q_row = shape.kv_row = int64_t(width);
  const BlockList list =
      c.block_size ? BlockList{gblocks.ptr, c.max_blocks, c.block_size} : BlockList{};
  cuda::attention_forward(shape, gin.ptr, gin.ptr + k_at, gin.ptr + v_at, list, go.ptr, glse.ptr,
                          nullptr);
  cuda::attention_backward(shape, gin.ptr, gin.ptr + k_at, gin.ptr + v_at, go.ptr, glse.ptr,
                           gdo.ptr, list, ggrad.ptr, ggrad.ptr + k_at, ggrad.ptr + v_at, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  std::vector<uint16_t> out_bits(nq), grad_bits(n_in);
  r.lse.resize(nl);
  ASSERT_EQ(cudaMemcpy(out_bits.data(), go.ptr, nq * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(grad_bits.data(), ggrad.ptr, n_in * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(r.lse.data(), glse.ptr, nl * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  auto unpack = [&](size_t at, size_t row_width, size_t n) {
    std::vector<uint16_t> bits(n);
    for (size_t i = 0; i < n; ++i) bits[i] = grad_bits[index(at, row_width, i)];
    return from_bf16(bits);
  };
  r.out = from_bf16(out_bits);
  r.dq = unpack(0, q_width, nq);
  r.dk = unpack(k_at, kv_width, nk);
  r.dv = unpack(v_at, kv_width, nk);
}

// The GPU forward and backward against the CPU reference in f64 on the same bf16-rounded random
// inputs (q and k then changed by `edit`, if given), with the default and the portable kernels,
// separate and packed layouts. dq_dk_tol: the bound on dQ and dK (bf16: 1e-2).
using InputEdit = std::function<void(std::vector<double>& q, std::vector<double>& k)>;
void expect_gpu_matches_reference(const Case& c, const std::vector<int32_t>& blocks,
                                  const InputEdit& edit = nullptr, double dq_dk_tol = 1e-2) {
  const size_t nq = size_t(c.B) * c.T * c.Hq * c.D, nk = size_t(c.B) * c.T * c.Hkv * c.D;
  const size_t nl = size_t(c.B) * c.Hq * c.T;
  auto q = randn(nq), k = randn(nk), v = randn(nk), dout = randn(nq);
  if (edit) edit(q, k);
  const auto qb = to_bf16(q), kb = to_bf16(k), vb = to_bf16(v), db = to_bf16(dout);

  std::vector<double> out(nq), lse(nl), dq(nq), dk(nk), dv(nk);
  cpu::attention_forward(shape_of(c), q.data(), k.data(), v.data(), list_of(c, blocks), out.data(),
                         lse.data());
  cpu::attention_backward(shape_of(c), q.data(), k.data(), v.data(), out.data(), lse.data(),
                          dout.data(), list_of(c, blocks), dq.data(), dk.data(), dv.data());

  // On Hopper the dense passes and the sparse dK/dV take the wgmma kernels; the portable ones
  // (other GPUs) are checked too. The Hopper dense passes run as the warp-specialized pipelines
  // with dQ from the pipelined dK/dV pass's bulk reductions (the default), and in turn: the
  // forward as its row pass, dQ from a pass of its own (pipelined) and its row pass (separate),
  // dK/dV as its row kernel with either dQ (fused: the row kernel's atomics); the pipelines also
  // with their rings copied by cp.async instead of the TMA (INFLLM_ATTENTION_COPY=cp_async); the
  // pipelined forward also with part of its exponentials on the FMA pipe
  // (INFLLM_ATTENTION_EXP2=fma2, the largest share).
  // The portable kernels and the sparse schedule have one forward, one dQ path and one dK/dV kernel
  // each.
  struct Kernels {
    const char* kernels;  // INFLLM_ATTENTION_KERNELS
    const char* dq;       // INFLLM_ATTENTION_DQ
    const char* fwd;      // INFLLM_ATTENTION_FWD
    const char* dkdv;     // INFLLM_ATTENTION_DKDV
    const char* copy;     // INFLLM_ATTENTION_COPY
    const char* exp2;     // INFLLM_ATTENTION_EXP2
  };
  std::vector<Kernels> runs = {{"default", "fused", "pipelined", "pipelined", "tma", "mufu"},
                               {"portable", "fused", "pipelined", "pipelined", "tma", "mufu"}};
  if (c.block_size == 0)
    runs.insert(runs.begin() + 1,
                {{"default", "fused", "rows", "pipelined", "tma", "mufu"},
                 {"default", "separate", "pipelined", "pipelined", "tma", "mufu"},
                 {"default", "pipelined", "pipelined", "pipelined", "tma", "mufu"},
                 {"default", "pipelined", "pipelined", "rows", "tma", "mufu"},
                 {"default", "fused", "pipelined", "rows", "tma", "mufu"},
                 {"default", "pipelined", "pipelined", "pipelined", "cp_async", "mufu"},
                 {"default", "fused", "pipelined", "pipelined", "tma", "fma2"}});
  static constexpr const char* kVariables[] = {"INFLLM_ATTENTION_KERNELS", "INFLLM_ATTENTION_DQ",
                                               "INFLLM_ATTENTION_FWD",     "INFLLM_ATTENTION_DKDV",
                                               "INFLLM_ATTENTION_COPY",    "INFLLM_ATTENTION_EXP2"};
  const UnsetOnExit restore{{std::begin(kVariables), std::end(kVariables)}};
  for (const Kernels& run : runs) {
    const char* values[] = {run.kernels, run.dq, run.fwd, run.dkdv, run.copy, run.exp2};
    std::string trace;
    for (int i = 0; i < 6; ++i) {
      setenv(kVariables[i], values[i], 1);
      trace += std::string(i ? " " : "") + kVariables[i] + "=" + values[i];
    }
    SCOPED_TRACE(trace);
    for (bool packed : {false, true}) {
      SCOPED_TRACE(packed ? "packed [B, T, Hq + 2 Hkv, D] layout" : "separate tensors");
      GpuRun r;
      ASSERT_NO_FATAL_FAILURE(gpu_run(c, blocks, qb, kb, vb, db, packed, r));
      EXPECT_LT(rel_err(r.out, out), 1e-2);
      EXPECT_LT(rel_err(r.lse, lse), 1e-3);
      EXPECT_LT(rel_err(r.dq, dq), dq_dk_tol);
      EXPECT_LT(rel_err(r.dk, dk), dq_dk_tol);
      EXPECT_LT(rel_err(r.dv, dv), 1e-2);
    }
  }
}

class GpuAttention : public ::testing::TestWithParam<Case> {};

TEST_P(GpuAttention, Bf16MatchesF64Reference) {
  INFLLM_REQUIRE_GPU();
  const Case c = GetParam();
  const bool every_block = c.max_blocks < 0;  // sparse with all causal blocks
  Case sc = c;
  if (every_block) sc.max_blocks = (c.T + c.block_size - 1) / c.block_size;
  const auto blocks = sc.block_size ? (every_block ? all_causal_blocks(sc) : random_blocks(sc))
                                    : std::vector<int32_t>{};
  expect_gpu_matches_reference(sc, blocks);
}

// InfLLM-V2's lists (a local window, random earlier blocks) and lists shared by each 128-token
// tile (as FlexAttention's mask): on Hopper the forward walks the blocks that many of a tile's
// tokens chose densely and the rest block by block. Both head dims, a G with padding rows; the
// last case shares more blocks per tile than a tile list holds.
TEST(GpuAttention, WindowedAndTileSharedListsMatchF64Reference) {
  INFLLM_REQUIRE_GPU();
  const std::tuple<Case, int> cases[] = {{Case{1, 1500, 16, 1, 128, 64, 9}, 4},
                                         {Case{2, 1300, 24, 2, 64, 64, 8}, 3},
                                         {Case{1, 1400, 16, 2, 128, 64, 12}, 0},
                                         {Case{1, 5300, 8, 1, 64, 64, 80}, 0}};
  for (const auto& [c, local] : cases) {
    SCOPED_TRACE("T=" + std::to_string(c.T) + " D=" + std::to_string(c.D) +
                 " max_blocks=" + std::to_string(c.max_blocks) +
                 (local ? " local=" + std::to_string(local) : " shared per tile"));
    expect_gpu_matches_reference(c, local ? windowed_blocks(c, local) : tile_shared_blocks(c));
  }
}

// The last 200 tokens' group-0 queries point at key 5 (block 0, which few of them select: a far
// block on Hopper), 8 times over: its score beats the tile blocks' maximum by ~65 nats, more than
// the Hopper forward's f32 sums take relative to that maximum, which sends the forward to the
// exact portable kernel. The results must not show it.
TEST(GpuAttention, FarScoresBeyondTheTileMaximumMatchF64Reference) {
  INFLLM_REQUIRE_GPU();
  const Case c{1, 1200, 16, 2, 128, 64, 8};
  const int G = c.Hq / c.Hkv, key = 5;
  auto blocks = windowed_blocks(c, 3);
  for (size_t list = 0; list < blocks.size() / c.max_blocks; ++list) {  // block 0: 1 in 20
    const auto first = blocks.begin() + list * c.max_blocks, last = first + c.max_blocks;
    if (list / c.Hkv % 20 != 0 && list / c.Hkv >= size_t(c.block_size))
      std::fill(std::remove(first, last, 0), last, -1);
  }
  // Those rows' attention is one-hot (scores ~90 nats apart), so their dS = P (dP - delta) is a
  // difference of nearly equal terms, and delta = rowsum(dO * O) comes from the bf16 output (as
  // in FlashAttention): both GPU backward paths give the same dQ and dK, 1-1.6% (relative L2)
  // from the f64 reference for some draws. The forward, the point of the case, keeps 1e-2.
  const double dq_dk_tol = 3e-2;
  expect_gpu_matches_reference(
      c, blocks,
      [&](auto& q, auto& k) {
        for (int t = c.T - 200; t < c.T; ++t)
          for (int h = 0; h < G; ++h)
            for (int d = 0; d < c.D; ++d)
              q[(size_t(t) * c.Hq + h) * c.D + d] = 8.0 * k[size_t(key) * c.Hkv * c.D + d];
      },
      dq_dk_tol);
}

// Dense lengths mostly not multiples of the 64-query and 128-key tiles; on an H100 every case with
// G > 1 splits the group's heads over CTAs (sm90::dkdv_splits), G = 1 cannot. The pipelined
// forward's K/V ring (3 stages at D=128, 4 at D=64) wraps in the cases of more than 4 128-key
// tiles, the pipelined dQ's (5 stages of 64 keys at D=128, 8 at D=64) in those of more than 320
// (D=128) or 512 (D=64) keys.
const Case kGpuCases[] = {
    {2, 1, 4, 2, 128, 0, 0},       // dense, G=2, B=2, a single token
    {2, 333, 2, 2, 64, 0, 0},      // dense, G=1, odd T
    {3, 190, 2, 2, 128, 0, 0},     // dense, G=1, B=3
    {1, 333, 4, 2, 128, 0, 0},     // dense, G=2
    {2, 97, 4, 2, 64, 0, 0},       // dense, G=2, one key tile whose second half is partly past T
    {1, 300, 16, 4, 64, 0, 0},     // dense, G=4
    {2, 451, 16, 2, 64, 0, 0},     // dense, G=8, B=2
    {1, 37, 8, 1, 128, 0, 0},      // dense, G=8, T below one query tile
    {1, 1061, 16, 1, 128, 0, 0},   // dense, G=16, several query tiles and head splits
    {2, 330, 32, 2, 64, 0, 0},     // dense, G=16, B=2
    {2, 1024, 4, 1, 64, 0, 0},     // dense, T a multiple of every tile size
    {1, 1000, 16, 2, 128, 0, 0},   // dense, G=8, 8 key tiles: the 3-stage ring wraps twice
    {2, 1000, 32, 2, 64, 0, 0},    // dense, G=16, B=2, the 4-stage ring wraps
    {2, 333, 2, 2, 128, 64, 3},    // sparse, G=1
    {1, 400, 6, 2, 64, 64, 4},     // sparse, G=3 (tiles not a multiple of G)
    {1, 333, 16, 2, 128, 64, 4},   // sparse, G=8
    {1, 700, 16, 1, 128, 64, 5},   // sparse, G=16
    {2, 250, 32, 2, 64, 64, 2},    // sparse, G=16, B=2
    {1, 333, 16, 1, 128, 64, -1},  // sparse with every causal block (== dense)
    {1, 1100, 16, 1, 64, 64, -1},  // blocks 0 and 1 are walked in several chunks
};

INSTANTIATE_TEST_SUITE_P(Shapes, GpuAttention, ::testing::ValuesIn(kGpuCases));

// The dense kernels' choices are read at every call (the forward's and its exponentials' at a
// forward, dQ's and dK/dV's at a backward, the K/V copy's at both); an unknown value is an error,
// not a silent default.
TEST(GpuAttention, RejectsUnknownKernelChoices) {
  INFLLM_REQUIRE_GPU();
  const AttentionShape shape{1, 64, 2, 2, 64, 0.1f};
  for (const char* name : {"INFLLM_ATTENTION_FWD", "INFLLM_ATTENTION_DQ", "INFLLM_ATTENTION_DKDV",
                           "INFLLM_ATTENTION_COPY", "INFLLM_ATTENTION_EXP2"}) {
    SCOPED_TRACE(name);
    struct Restore {
      const char* name;
      ~Restore() { unsetenv(name); }
    } restore{name};
    setenv(name, "warp_specialized", 1);
    const bool forward_only = std::strcmp(name, "INFLLM_ATTENTION_FWD") == 0 ||
                              std::strcmp(name, "INFLLM_ATTENTION_EXP2") == 0;
    const bool forward = forward_only || std::strcmp(name, "INFLLM_ATTENTION_COPY") == 0;
    const bool backward = !forward_only;
    if (forward) {
      EXPECT_THROW(
          cuda::attention_forward(shape, nullptr, nullptr, nullptr, {}, nullptr, nullptr, nullptr),
          Error);
    }
    if (backward) {
      EXPECT_THROW(cuda::attention_backward(shape, nullptr, nullptr, nullptr, nullptr, nullptr,
                                            nullptr, {}, nullptr, nullptr, nullptr, nullptr),
                   Error);
    }
  }
}

// Fresh random bf16 inputs of case c, dense layout.
struct Bf16Inputs {
  std::vector<uint16_t> q, k, v, dout;
};
Bf16Inputs random_bf16_inputs(const Case& c) {
  const size_t nq = size_t(c.B) * c.T * c.Hq * c.D, nk = size_t(c.B) * c.T * c.Hkv * c.D;
  auto q = randn(nq), k = randn(nk), v = randn(nk), dout = randn(nq);
  return {to_bf16(q), to_bf16(k), to_bf16(v), to_bf16(dout)};
}

// The pipelined forward runs the row pass's steps in the same order with the same tile math, so O
// and lse come out bit for bit the same, with either copy. At D = 64 its CTAs hold 192 query
// rows, so a CTA's first rows also walk key tiles past their last key (masked: exact zeros);
// T = 97 leaves two of a CTA's three warpgroups past T, 1000 and 2113 end inside a warpgroup.
TEST(GpuAttention, PipelinedForwardMatchesRowsBitwise) {
  INFLLM_REQUIRE_GPU();
  const UnsetOnExit restore{{"INFLLM_ATTENTION_FWD", "INFLLM_ATTENTION_COPY"}};
  for (const Case& c : {Case{2, 97, 4, 2, 64, 0, 0}, Case{1, 1000, 8, 2, 64, 0, 0},
                        Case{1, 2113, 16, 2, 64, 0, 0}, Case{1, 1000, 8, 2, 128, 0, 0}}) {
    SCOPED_TRACE("T=" + std::to_string(c.T) + " D=" + std::to_string(c.D));
    const Bf16Inputs in = random_bf16_inputs(c);
    GpuRun rows;
    setenv("INFLLM_ATTENTION_FWD", "rows", 1);
    ASSERT_NO_FATAL_FAILURE(gpu_run(c, {}, in.q, in.k, in.v, in.dout, false, rows));
    setenv("INFLLM_ATTENTION_FWD", "pipelined", 1);
    for (const char* copy : {"tma", "cp_async"}) {
      SCOPED_TRACE(std::string("INFLLM_ATTENTION_COPY=") + copy);
      setenv("INFLLM_ATTENTION_COPY", copy, 1);
      GpuRun pipelined;
      ASSERT_NO_FATAL_FAILURE(gpu_run(c, {}, in.q, in.k, in.v, in.dout, false, pipelined));
      size_t out_differ = 0, lse_differ = 0;
      for (size_t i = 0; i < rows.out.size(); ++i) out_differ += rows.out[i] != pipelined.out[i];
      for (size_t i = 0; i < rows.lse.size(); ++i) lse_differ += rows.lse[i] != pipelined.lse[i];
      EXPECT_EQ(out_differ, 0u);
      EXPECT_EQ(lse_differ, 0u);
    }
  }
}

// The pipelined dK/dV kernel adds dense_dkdv_kernel's terms in the same order with the same tile
// math (at D = 64 one step of 128 queries for two of the row kernel's 64-query steps; T = 2112
// leaves the last step half past T), so dK and dV come out bit for bit the same, with either copy
// and with the fused dQ (whose dQ then differs from the separate pass's only in the f32
// summation order). At these shapes the
// dK/dV pass has at least 1056 key tiles per head split: on a 132-SM H100 or H200 (8 CTAs per SM)
// the heads are not split, so each CTA walks two heads and its rings (the fused dQ's buffers too)
// wrap many times (the reference cases above split the heads down to one per CTA).
TEST(GpuAttention, PipelinedDkdvMatchesRowsBitwise) {
  INFLLM_REQUIRE_GPU();
  const UnsetOnExit restore{
      {"INFLLM_ATTENTION_DKDV", "INFLLM_ATTENTION_COPY", "INFLLM_ATTENTION_DQ"}};
  for (const Case& c : {Case{1, 4224, 64, 32, 128, 0, 0}, Case{1, 2112, 128, 64, 64, 0, 0}}) {
    SCOPED_TRACE("D=" + std::to_string(c.D));
    const Bf16Inputs in = random_bf16_inputs(c);
    GpuRun rows;
    setenv("INFLLM_ATTENTION_DKDV", "rows", 1);
    ASSERT_NO_FATAL_FAILURE(gpu_run(c, {}, in.q, in.k, in.v, in.dout, false, rows));
    setenv("INFLLM_ATTENTION_DKDV", "pipelined", 1);
    // The query ring by the TMA, by cp.async, then by the TMA with the fused dQ.
    for (const auto& [copy, dq] : {std::pair{"tma", "pipelined"},
                                   std::pair{"cp_async", "pipelined"}, std::pair{"tma", "fused"}}) {
      SCOPED_TRACE(std::string("INFLLM_ATTENTION_COPY=") + copy + " INFLLM_ATTENTION_DQ=" + dq);
      setenv("INFLLM_ATTENTION_COPY", copy, 1);
      setenv("INFLLM_ATTENTION_DQ", dq, 1);
      GpuRun pipelined;
      ASSERT_NO_FATAL_FAILURE(gpu_run(c, {}, in.q, in.k, in.v, in.dout, false, pipelined));
      size_t dk_differ = 0, dv_differ = 0;
      for (size_t i = 0; i < rows.dk.size(); ++i) {
        dk_differ += rows.dk[i] != pipelined.dk[i];
        dv_differ += rows.dv[i] != pipelined.dv[i];
      }
      EXPECT_EQ(dk_differ, 0u);
      EXPECT_EQ(dv_differ, 0u);
      EXPECT_LT(rel_err(pipelined.dq, rows.dq), 4e-3);
    }
  }
}

TEST(GpuAttention, RejectsUnsupportedHeadDim) {
  INFLLM_REQUIRE_GPU();
  EXPECT_THROW(cuda::attention_forward({1, 64, 2, 2, 96, 0.1f}, nullptr, nullptr, nullptr, {},
                                       nullptr, nullptr, nullptr),
               Error);
}
#endif

}  // namespace
}  // namespace infllm::attention
