// CPU reference of decode attention (decode_attention.h): plain loops in double precision. The
// selection is infllm_v2_cpu.cpp's own row code; the CUDA decode is tested against these.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attention/decode_attention.h"
#include "core/error.h"

namespace infllm::attention {

void check_decode_shape(const char* op, const DecodeShape& s) {
  INFLLM_CHECK(s.Hq > 0 && s.Hkv > 0 && s.D > 0, op,
               ": every dimension must be positive, got Hq=", s.Hq, " Hkv=", s.Hkv, " D=", s.D);
  INFLLM_CHECK(s.Hq % s.Hkv == 0, op, ": Hq=", s.Hq, " is not a multiple of Hkv=", s.Hkv,
               "; GQA needs whole groups of query heads per KV head");
  INFLLM_CHECK(std::isfinite(s.scale) && s.scale > 0.f, op, ": scale=", s.scale,
               " must be positive (usually 1/sqrt(D))");
  INFLLM_CHECK(s.position >= 0, op, ": position=", s.position, " must be >= 0");
}

namespace cpu {
namespace {

// The keys the token sees in group g: 0 .. p dense, else the keys <= p of its listed blocks.
void visible_keys(const DecodeShape& s, const int32_t* blocks, int max_blocks, int block_size,
                  int g, std::vector<int>& keys) {
  keys.clear();
  if (blocks == nullptr) {
    for (int j = 0; j <= s.position; ++j) keys.push_back(j);
    return;
  }
  std::vector<int> chosen;
  for (int i = 0; i < max_blocks; ++i) {
    const int32_t blk = blocks[size_t(g) * max_blocks + i];
    if (blk >= 0 && int64_t(blk) * block_size <= s.position) chosen.push_back(blk);
  }
  std::sort(chosen.begin(), chosen.end());
  chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
  for (int blk : chosen)
    for (int j = blk * block_size; j < (blk + 1) * block_size && j <= s.position; ++j)
      keys.push_back(j);
}

}  // namespace

template <class T>
void decode_attention(const DecodeShape& s, const T* q, const T* k, const T* v,
                      const int32_t* blocks, int max_blocks, int block_size, T* out) {
  check_decode_shape("decode_attention (cpu)", s);
  INFLLM_CHECK(blocks == nullptr || (max_blocks > 0 && block_size > 0),
               "decode_attention (cpu): a block list needs max_blocks > 0 and block_size > 0, got ",
               max_blocks, " and ", block_size);
  const int G = s.Hq / s.Hkv, D = s.D;
  std::vector<int> keys;
  std::vector<double> score, acc(D);
  for (int g = 0; g < s.Hkv; ++g) {
    visible_keys(s, blocks, max_blocks, block_size, g, keys);
    score.resize(keys.size());
    for (int h = g * G; h < (g + 1) * G; ++h) {
      const T* qh = q + size_t(h) * D;
      double mx = -std::numeric_limits<double>::infinity();
      for (size_t i = 0; i < keys.size(); ++i) {
        const T* kj = k + (size_t(keys[i]) * s.Hkv + g) * D;
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += double(qh[d]) * double(kj[d]);
        score[i] = dot * double(s.scale);
        mx = std::max(mx, score[i]);
      }
      double z = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (size_t i = 0; i < keys.size(); ++i) {
        const double p = std::exp(score[i] - mx);
        z += p;
        const T* vj = v + (size_t(keys[i]) * s.Hkv + g) * D;
        for (int d = 0; d < D; ++d) acc[d] += p * double(vj[d]);
      }
      for (int d = 0; d < D; ++d) out[size_t(h) * D + d] = T(acc[d] / z);
    }
  }
}

template <class T>
void select_decode_blocks(const SparseConfig& cfg, const DecodeShape& s, const T* q, const T* kc,
                          int32_t* blocks) {
  check_decode_shape("select_decode_blocks (cpu)", s);
  const int t = s.position, n = num_kernels(cfg, t + 1);
  const std::vector<double> kc64(kc, kc + size_t(n) * s.Hkv * s.D);
  AttentionShape shape;
  shape.B = 1;
  shape.T = t + 1;
  shape.Hq = s.Hq;
  shape.Hkv = s.Hkv;
  shape.D = s.D;
  shape.scale = s.scale;
  select_token_blocks(cfg, shape, q, kc64.data(), t, blocks);
}

template <class T>
void append_compressed_keys(const SparseConfig& cfg, int Hkv, int D, const T* k, KernelRange range,
                            T* kc) {
  check_sparse_config("append_compressed_keys (cpu)", cfg);
  const size_t row = size_t(Hkv) * D;
  for (int i = range.first; i < range.end; ++i)
    for (size_t c = 0; c < row; ++c) {
      double sum = 0;  // the order and rounding of cpu::compress_keys
      for (int u = 0; u < cfg.kernel_size; ++u)
        sum += double(k[(size_t(i) * cfg.kernel_stride + u) * row + c]);
      kc[size_t(i) * row + c] = T(sum / cfg.kernel_size);
    }
}

#define INFLLM_INSTANTIATE(T)                                                              \
  template void decode_attention<T>(const DecodeShape&, const T*, const T*, const T*,      \
                                    const int32_t*, int, int, T*);                         \
  template void select_decode_blocks<T>(const SparseConfig&, const DecodeShape&, const T*, \
                                        const T*, int32_t*);                               \
  template void append_compressed_keys<T>(const SparseConfig&, int, int, const T*, KernelRange, T*);
INFLLM_INSTANTIATE(float)
INFLLM_INSTANTIATE(double)
#undef INFLLM_INSTANTIATE

}  // namespace cpu

}  // namespace infllm::attention
