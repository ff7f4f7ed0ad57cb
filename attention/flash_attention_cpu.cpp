// CPU reference for causal (dense or block-sparse) attention: plain loops, one softmax row at a
// time, OpenMP over heads. Obviously correct first; the CUDA kernels are tested against it.
#include <algorithm>
#include <cmath>
#include <vector>

#include "attention/flash_attention.h"
#include "core/error.h"

namespace infllm::attention {

void check_attention_shape(const char* op, const AttentionShape& s, const BlockList& blocks) {
  INFLLM_CHECK(s.B > 0 && s.T > 0 && s.Hq > 0 && s.Hkv > 0 && s.D > 0, op,
               ": every dimension must be positive, got B=", s.B, " T=", s.T, " Hq=", s.Hq,
               " Hkv=", s.Hkv, " D=", s.D);
  INFLLM_CHECK(s.Hq % s.Hkv == 0, op, ": Hq=", s.Hq, " is not a multiple of Hkv=", s.Hkv,
               "; GQA needs whole groups of query heads per KV head");
  INFLLM_CHECK(std::isfinite(s.scale) && s.scale > 0.f, op, ": scale=", s.scale,
               " must be positive (usually 1/sqrt(D))");
  INFLLM_CHECK(s.q_row == 0 || s.q_row >= int64_t(s.Hq) * s.D, op, ": q_row=", s.q_row,
               " must be 0 (contiguous) or at least Hq * D = ", int64_t(s.Hq) * s.D);
  INFLLM_CHECK(s.kv_row == 0 || s.kv_row >= int64_t(s.Hkv) * s.D, op, ": kv_row=", s.kv_row,
               " must be 0 (contiguous) or at least Hkv * D = ", int64_t(s.Hkv) * s.D);
  if (blocks.blocks == nullptr) return;
  INFLLM_CHECK(blocks.max_blocks > 0, op, ": block list given with max_blocks=", blocks.max_blocks,
               "; pass blocks=nullptr for dense attention");
  INFLLM_CHECK(blocks.block_size > 0, op, ": block_size=", blocks.block_size, " must be positive");
}

namespace cpu {
namespace {

// The keys that row (b, t) of KV group g sees, ascending: 0..t when dense, else the keys <= t
// of the selected blocks (each block once, in any order given).
void visible_keys(const AttentionShape& s, const BlockList& bl, int b, int t, int g,
                  std::vector<int>& keys) {
  keys.clear();
  if (bl.blocks == nullptr) {
    for (int j = 0; j <= t; ++j) keys.push_back(j);
    return;
  }
  const int32_t* list = bl.blocks + ((size_t(b) * s.T + t) * s.Hkv + g) * bl.max_blocks;
  std::vector<int> chosen;
  for (int i = 0; i < bl.max_blocks; ++i)
    if (list[i] >= 0 && size_t(list[i]) * bl.block_size <= size_t(t)) chosen.push_back(list[i]);
  std::sort(chosen.begin(), chosen.end());
  chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
  for (int blk : chosen)
    for (int j = blk * bl.block_size; j < (blk + 1) * bl.block_size && j <= t; ++j)
      keys.push_back(j);
}

// Eight independent partial sums: without -ffast-math the compiler may not reorder one running
// sum, so a single accumulator would stay scalar; eight of them vectorize.
template <class T>
T dot(const T* a, const T* b, int n) {
  constexpr int kLanes = 8;
  T partial[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) partial[l] += a[i + l] * b[i + l];
  T acc = 0;
  for (; i < n; ++i) acc += a[i] * b[i];
  for (int l = 0; l < kLanes; ++l) acc += partial[l];
  return acc;
}

}  // namespace

template <class T>
void attention_forward(const AttentionShape& s, const T* q, const T* k, const T* v,
                       BlockList blocks, T* out, T* lse) {
  check_attention_shape("attention_forward (cpu)", s, blocks);
  INFLLM_CHECK(s.q_row == 0 && s.kv_row == 0,
               "attention_forward (cpu): the reference takes contiguous q, k, v");
  const int G = s.Hq / s.Hkv, D = s.D;
#pragma omp parallel
  {
    std::vector<int> keys;
    std::vector<T> score;
#pragma omp for collapse(2) schedule(dynamic)
    for (int b = 0; b < s.B; ++b)
      for (int h = 0; h < s.Hq; ++h)
        for (int t = 0; t < s.T; ++t) {
          const int g = h / G;
          visible_keys(s, blocks, b, t, g, keys);
          const T* qrow = q + ((size_t(b) * s.T + t) * s.Hq + h) * D;
          score.resize(keys.size());
          T max_score = -INFINITY;
          for (size_t j = 0; j < keys.size(); ++j) {
            const T* krow = k + ((size_t(b) * s.T + keys[j]) * s.Hkv + g) * D;
            score[j] = T(s.scale) * dot(qrow, krow, D);
            max_score = std::max(max_score, score[j]);
          }
          T* orow = out + ((size_t(b) * s.T + t) * s.Hq + h) * D;
          std::fill(orow, orow + D, T(0));
          T sum = 0;
          for (size_t j = 0; j < keys.size(); ++j) {
            const T p = std::exp(score[j] - max_score);
            sum += p;
            const T* vrow = v + ((size_t(b) * s.T + keys[j]) * s.Hkv + g) * D;
            for (int d = 0; d < D; ++d) orow[d] += p * vrow[d];
          }
          for (int d = 0; d < D; ++d) orow[d] /= sum;
          lse[(size_t(b) * s.Hq + h) * s.T + t] = max_score + std::log(sum);
        }
  }
}

// Parallel over (b, KV group): a group's G heads all add into the same dk/dv rows, so one thread
// owns them and no two threads write the same memory.
template <class T>
void attention_backward(const AttentionShape& s, const T* q, const T* k, const T* v, const T* out,
                        const T* lse, const T* dout, BlockList blocks, T* dq, T* dk, T* dv) {
  check_attention_shape("attention_backward (cpu)", s, blocks);
  INFLLM_CHECK(s.q_row == 0 && s.kv_row == 0,
               "attention_backward (cpu): the reference takes contiguous q, k, v");
  const int G = s.Hq / s.Hkv, D = s.D;
#pragma omp parallel
  {
    std::vector<int> keys;
#pragma omp for collapse(2) schedule(dynamic)
    for (int b = 0; b < s.B; ++b)
      for (int g = 0; g < s.Hkv; ++g) {
        for (int t = 0; t < s.T; ++t) {
          T* dkrow = dk + ((size_t(b) * s.T + t) * s.Hkv + g) * D;
          T* dvrow = dv + ((size_t(b) * s.T + t) * s.Hkv + g) * D;
          std::fill(dkrow, dkrow + D, T(0));
          std::fill(dvrow, dvrow + D, T(0));
        }
        for (int h = g * G; h < (g + 1) * G; ++h)
          for (int t = 0; t < s.T; ++t) {
            visible_keys(s, blocks, b, t, g, keys);
            const size_t row = (size_t(b) * s.T + t) * s.Hq + h;
            const T* qrow = q + row * D;
            const T* dorow = dout + row * D;
            T* dqrow = dq + row * D;
            std::fill(dqrow, dqrow + D, T(0));
            const T row_lse = lse[(size_t(b) * s.Hq + h) * s.T + t];
            const T delta = dot(dorow, out + row * D, D);  // D_i = rowsum(dO * O)
            for (int key : keys) {
              const size_t kv_row = (size_t(b) * s.T + key) * s.Hkv + g;
              const T* krow = k + kv_row * D;
              const T p = std::exp(T(s.scale) * dot(qrow, krow, D) - row_lse);
              const T dp = dot(dorow, v + kv_row * D, D);
              const T ds = p * (dp - delta) * T(s.scale);
              T* dkrow = dk + kv_row * D;
              T* dvrow = dv + kv_row * D;
              for (int d = 0; d < D; ++d) {
                dqrow[d] += ds * krow[d];
                dkrow[d] += ds * qrow[d];
                dvrow[d] += p * dorow[d];
              }
            }
          }
      }
  }
}

template void attention_forward<float>(const AttentionShape&, const float*, const float*,
                                       const float*, BlockList, float*, float*);
template void attention_forward<double>(const AttentionShape&, const double*, const double*,
                                        const double*, BlockList, double*, double*);
template void attention_backward<float>(const AttentionShape&, const float*, const float*,
                                        const float*, const float*, const float*, const float*,
                                        BlockList, float*, float*, float*);
template void attention_backward<double>(const AttentionShape&, const double*, const double*,
                                         const double*, const double*, const double*, const double*,
                                         BlockList, double*, double*, double*);

}  // namespace cpu
}  // namespace infllm::attention
