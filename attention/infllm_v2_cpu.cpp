// CPU reference of InfLLM-V2 block selection: plain loops in double precision, OpenMP over
// (b, t). Obviously correct first; the CUDA stage 1 is measured against it.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "attention/infllm_v2.h"
#include "core/error.h"

namespace infllm::attention {

BlockOverlap block_overlap(const int32_t* a, const int32_t* b, size_t rows, int max_blocks) {
  BlockOverlap o;
  for (size_t r = 0; r < rows; ++r) {
    const int32_t* x = a + r * max_blocks;
    const int32_t* y = b + r * max_blocks;
    const int nx = int(std::find(x, x + max_blocks, -1) - x);
    const int ny = int(std::find(y, y + max_blocks, -1) - y);
    o.in_a += nx;
    for (int i = 0, j = 0; i < nx && j < ny;) {  // both lists are ascending
      if (x[i] == y[j])
        ++o.common, ++i, ++j;
      else if (x[i] < y[j])
        ++i;
      else
        ++j;
    }
  }
  return o;
}

double block_agreement(const int32_t* a, const int32_t* b, size_t rows, int max_blocks) {
  const BlockOverlap o = block_overlap(a, b, rows, max_blocks);
  return o.in_a == 0 ? 1.0 : double(o.common) / double(o.in_a);
}

namespace cpu {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

void check_inputs(const char* op, const SparseConfig& cfg, const AttentionShape& s) {
  check_sparse_config(op, cfg);
  check_attention_shape(op, s, BlockList{});
  INFLLM_CHECK(s.q_row == 0 && s.kv_row == 0, op, ": the reference takes contiguous q and k");
}

// Compressed keys in double, [B, n_kernels, Hkv, D].
template <class T>
std::vector<double> compress_keys_f64(const SparseConfig& cfg, const AttentionShape& s,
                                      const T* k) {
  const int nk = num_kernels(cfg, s.T);
  const size_t row = size_t(s.Hkv) * s.D;
  std::vector<double> kc(size_t(s.B) * nk * row);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < s.B; ++b)
    for (int i = 0; i < nk; ++i)
      for (size_t c = 0; c < row; ++c) {
        double sum = 0;
        for (int u = 0; u < cfg.kernel_size; ++u)
          sum += double(k[(size_t(b) * s.T + size_t(i) * cfg.kernel_stride + u) * row + c]);
        kc[(size_t(b) * nk + i) * row + c] = sum / cfg.kernel_size;
      }
  return kc;
}

// s[i] = sum over the group's heads of softmax_i(q_t[h] . kc[i] * scale), i < n causal kernels;
// q_t [Hq, D] is one token's queries, kc [>= n, Hkv, D] its sequence's compressed keys.
template <class T>
void group_kernel_scores(const AttentionShape& s, const T* q_t, const double* kc, int g, int n,
                         std::vector<double>& x, std::vector<double>& sum) {
  const int G = s.Hq / s.Hkv;
  std::fill(sum.begin(), sum.begin() + n, 0.0);
  for (int h = g * G; h < (g + 1) * G; ++h) {
    const T* qv = q_t + size_t(h) * s.D;
    double mx = -kInf;
    for (int i = 0; i < n; ++i) {
      const double* kv = kc + (size_t(i) * s.Hkv + g) * s.D;
      double dot = 0;
      for (int d = 0; d < s.D; ++d) dot += double(qv[d]) * kv[d];
      x[i] = dot * double(s.scale);
      mx = std::max(mx, x[i]);
    }
    double z = 0;
    for (int i = 0; i < n; ++i) z += std::exp(x[i] - mx);
    for (int i = 0; i < n; ++i) sum[i] += std::exp(x[i] - mx) / z;
  }
}

// One row of S for token t: forced +inf, max-pooled kernel scores, -inf without kernels/future.
void pool_blocks(const SparseConfig& cfg, int t, const std::vector<double>& sum, int n, double* out,
                 int nb) {
  const int r = cfg.kernels_per_block();
  for (int j = 0; j < nb; ++j) {
    double best = -kInf;
    if (j * cfg.block_size > t) {
      out[j] = best;
      continue;
    }
    if (is_forced_block(cfg, t, j)) {
      out[j] = kInf;
      continue;
    }
    for (int i = std::max(r * j - 1, 0); i <= std::min(r * j + r - 1, n - 1); ++i)
      best = std::max(best, sum[i]);
    out[j] = best;
  }
}

// Row (b, t, g) of S, from the f64 compressed keys; x and sum are scratch of nk entries.
template <class T>
void score_row(const SparseConfig& cfg, const AttentionShape& s, const T* q, const double* kc,
               int nk, int b, int t, int g, std::vector<double>& x, std::vector<double>& sum,
               double* out) {
  const int n = num_kernels(cfg, t + 1);
  group_kernel_scores(s, q + (size_t(b) * s.T + t) * s.Hq * s.D, kc + size_t(b) * nk * s.Hkv * s.D,
                      g, n, x, sum);
  pool_blocks(cfg, t, sum, n, out, num_blocks(cfg, s.T));
}

// The k best of S[0..j_t] by (score desc, index asc), written ascending and padded with -1.
void select_topk_blocks(const SparseConfig& cfg, int t, const double* S, int32_t* out) {
  const int n = t / cfg.block_size + 1;
  const int k = std::min(cfg.topk, n);
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return S[a] != S[b] ? S[a] > S[b] : a < b; });
  std::sort(order.begin(), order.begin() + k);
  for (int i = 0; i < cfg.topk; ++i) out[i] = i < k ? order[i] : -1;
}

// Rows `tokens` of every batch entry and group, from f64 compressed keys kc [B, nk, Hkv, D]:
// blocks [B, tokens.size(), Hkv, cfg.topk].
template <class T>
void select_rows(const char* op, const SparseConfig& cfg, const AttentionShape& s, const T* q,
                 const std::vector<double>& kc, const std::vector<int>& tokens, int32_t* blocks) {
  for (int t : tokens) INFLLM_CHECK(t >= 0 && t < s.T, op, ": token ", t, " is outside T=", s.T);
  const int nk = num_kernels(cfg, s.T), nb = num_blocks(cfg, s.T), n = int(tokens.size());
#pragma omp parallel
  {
    std::vector<double> x(nk), sum(nk), S(nb);
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < s.B; ++b)
      for (int i = 0; i < n; ++i)
        for (int g = 0; g < s.Hkv; ++g) {
          score_row(cfg, s, q, kc.data(), nk, b, tokens[i], g, x, sum, S.data());
          select_topk_blocks(cfg, tokens[i], S.data(),
                             blocks + ((size_t(b) * n + i) * s.Hkv + g) * cfg.topk);
        }
  }
}

}  // namespace

template <class T>
void compress_keys(const SparseConfig& cfg, const AttentionShape& shape, const T* k, T* kc) {
  check_inputs("infllm_v2 compress_keys", cfg, shape);
  const std::vector<double> ref = compress_keys_f64(cfg, shape, k);
  for (size_t i = 0; i < ref.size(); ++i) kc[i] = T(ref[i]);
}

template <class T>
std::vector<double> score_blocks(const SparseConfig& cfg, const AttentionShape& s, const T* q,
                                 const T* k) {
  check_inputs("infllm_v2 score_blocks", cfg, s);
  const int nk = num_kernels(cfg, s.T), nb = num_blocks(cfg, s.T);
  const std::vector<double> kc = compress_keys_f64(cfg, s, k);
  std::vector<double> S(size_t(s.B) * s.T * s.Hkv * nb);
#pragma omp parallel
  {
    std::vector<double> x(nk), sum(nk);
#pragma omp for collapse(2) schedule(dynamic, 16)
    for (int b = 0; b < s.B; ++b)
      for (int t = 0; t < s.T; ++t)
        for (int g = 0; g < s.Hkv; ++g)
          score_row(cfg, s, q, kc.data(), nk, b, t, g, x, sum,
                    &S[((size_t(b) * s.T + t) * s.Hkv + g) * nb]);
  }
  return S;
}

template <class T>
void select_blocks(const SparseConfig& cfg, const AttentionShape& s, const T* q, const T* k,
                   int32_t* blocks) {
  const std::vector<double> S = score_blocks(cfg, s, q, k);
  const int nb = num_blocks(cfg, s.T);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < s.B; ++b)
    for (int t = 0; t < s.T; ++t)
      for (int g = 0; g < s.Hkv; ++g) {
        const size_t row = (size_t(b) * s.T + t) * s.Hkv + g;
        select_topk_blocks(cfg, t, &S[row * nb], blocks + row * cfg.topk);
      }
}

template <class T>
void select_blocks_at(const SparseConfig& cfg, const AttentionShape& s, const T* q, const T* k,
                      const std::vector<int>& tokens, int32_t* blocks) {
  check_inputs("infllm_v2 select_blocks_at", cfg, s);
  select_rows("infllm_v2 select_blocks_at", cfg, s, q, compress_keys_f64(cfg, s, k), tokens,
              blocks);
}

template <class T>
void select_blocks_compressed_at(const SparseConfig& cfg, const AttentionShape& s, const T* q,
                                 const T* kc, const std::vector<int>& tokens, int32_t* blocks) {
  check_inputs("infllm_v2 select_blocks_compressed_at", cfg, s);
  select_rows("infllm_v2 select_blocks_compressed_at", cfg, s, q,
              std::vector<double>(kc, kc + size_t(s.B) * num_kernels(cfg, s.T) * s.Hkv * s.D),
              tokens, blocks);
}

template <class T>
void select_blocks_compressed(const SparseConfig& cfg, const AttentionShape& s, const T* q,
                              const T* kc_in, int32_t* blocks) {
  check_inputs("infllm_v2 select_blocks_compressed", cfg, s);
  const int nk = num_kernels(cfg, s.T), nb = num_blocks(cfg, s.T);
  const std::vector<double> kc(kc_in, kc_in + size_t(s.B) * nk * s.Hkv * s.D);
#pragma omp parallel
  {
    std::vector<double> x(nk), sum(nk), S(nb);
#pragma omp for collapse(2) schedule(dynamic, 16)
    for (int b = 0; b < s.B; ++b)
      for (int t = 0; t < s.T; ++t)
        for (int g = 0; g < s.Hkv; ++g) {
          score_row(cfg, s, q, kc.data(), nk, b, t, g, x, sum, S.data());
          select_topk_blocks(cfg, t, S.data(),
                             blocks + ((size_t(b) * s.T + t) * s.Hkv + g) * cfg.topk);
        }
  }
}

template <class T>
std::vector<double> score_token_blocks(const SparseConfig& cfg, const AttentionShape& s,
                                       const T* q_t, const double* kc, int t) {
  check_inputs("infllm_v2 score_token_blocks", cfg, s);
  INFLLM_CHECK(t >= 0 && t < s.T, "infllm_v2 score_token_blocks: token ", t, " is outside T=", s.T);
  const int n = num_kernels(cfg, t + 1), nb = num_blocks(cfg, t + 1);
  std::vector<double> x(n), sum(n), S(size_t(s.Hkv) * nb);
  for (int g = 0; g < s.Hkv; ++g) {
    group_kernel_scores(s, q_t, kc, g, n, x, sum);
    pool_blocks(cfg, t, sum, n, &S[size_t(g) * nb], nb);
  }
  return S;
}

template <class T>
void select_token_blocks(const SparseConfig& cfg, const AttentionShape& s, const T* q_t,
                         const double* kc, int t, int32_t* blocks) {
  const std::vector<double> S = score_token_blocks(cfg, s, q_t, kc, t);
  const size_t nb = S.size() / size_t(s.Hkv);
  for (int g = 0; g < s.Hkv; ++g)
    select_topk_blocks(cfg, t, &S[size_t(g) * nb], blocks + size_t(g) * cfg.topk);
}

#define INFLLM_INSTANTIATE(T)                                                                     \
  template void compress_keys<T>(const SparseConfig&, const AttentionShape&, const T*, T*);       \
  template std::vector<double> score_blocks<T>(const SparseConfig&, const AttentionShape&,        \
                                               const T*, const T*);                               \
  template void select_blocks<T>(const SparseConfig&, const AttentionShape&, const T*, const T*,  \
                                 int32_t*);                                                       \
  template void select_blocks_at<T>(const SparseConfig&, const AttentionShape&, const T*,         \
                                    const T*, const std::vector<int>&, int32_t*);                 \
  template void select_blocks_compressed<T>(const SparseConfig&, const AttentionShape&, const T*, \
                                            const T*, int32_t*);                                  \
  template void select_token_blocks<T>(const SparseConfig&, const AttentionShape&, const T*,      \
                                       const double*, int, int32_t*);                             \
  template std::vector<double> score_token_blocks<T>(const SparseConfig&, const AttentionShape&,  \
                                                     const T*, const double*, int);               \
  template void select_blocks_compressed_at<T>(const SparseConfig&, const AttentionShape&,        \
                                               const T*, const T*, const std::vector<int>&,       \
                                               int32_t*);
INFLLM_INSTANTIATE(float)
INFLLM_INSTANTIATE(double)
#undef INFLLM_INSTANTIATE

}  // namespace cpu

}  // namespace infllm::attention
