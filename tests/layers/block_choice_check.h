// Weighing one token's InfLLM-V2 block choice (attention/infllm_v2.h, steps 2-4) by its f64 block
// scores, for the decode tests on the GPU. There the decode selection (decode_select.cu) and the
// training selection (infllm_v2_scores.cu, infllm_v2_topk.cu) compute the f64-defined choice in
// f32, and in generation they read inputs that differ by bf16 rounding (a GEMM of one row against
// one of the whole sequence, another attention kernel in the layer below). So two lists may differ
// legitimately, but only between blocks whose scores are that close:
//   - a list against the f64 choice on the very inputs it was made from: within f32 rounding
//     (kF32ScoreTie);
//   - the decode's list against the training's, each on its own inputs: within what bf16
//     rounding of q and the compressed keys can move a score (bf16_tie_bound).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "attention/cached_attention.h"
#include "attention/infllm_v2.h"
#include "layers/kv_cache.h"
#include "tests/test_util.h"

namespace infllm::testing {

// One layer's block selection for the token at `position`, on the host: the inputs it was made
// from (bf16 values on the GPU) and the list it chose.
struct TokenSelection {
  int position = 0;
  std::vector<double> q;        // [Hq, D], RoPE applied
  std::vector<double> kc;       // [num_kernels(position + 1), Hkv, D] compressed keys
  std::vector<int32_t> blocks;  // [Hkv, topk], ascending, -1 padded
};

// Scores of blocks that an f32 computation may order either way: the GPU selections take f32 dot
// products of exact bf16 products (relative error ~D * 2^-24 of sum |q kc|, under 1e-5 here)
// and ex2.approx (2^-22), so a block's score is off by well under 1e-5 relative; 1e-4 in
// |ln S_a - ln S_b| leaves a margin of 10.
constexpr double kF32ScoreTie = 1e-4;

inline attention::AttentionShape token_shape(int Hq, int Hkv, int D, int position) {
  return {1, position + 1, Hq, Hkv, D, float(1.0 / std::sqrt(double(D)))};
}

// S [Hkv, num_blocks(position + 1)] of the selection's inputs in f64 (cpu::score_token_blocks).
inline std::vector<double> f64_block_scores(const attention::SparseConfig& cfg,
                                            const attention::AttentionShape& shape,
                                            const TokenSelection& s) {
  return attention::cpu::score_token_blocks<double>(cfg, shape, s.q.data(), s.kc.data(),
                                                    s.position);
}

// The f64 choice [Hkv, topk] on the selection's inputs (cpu::select_token_blocks).
inline std::vector<int32_t> f64_blocks(const attention::SparseConfig& cfg,
                                       const attention::AttentionShape& shape,
                                       const TokenSelection& s) {
  std::vector<int32_t> blocks(size_t(shape.Hkv) * cfg.topk);
  attention::cpu::select_token_blocks<double>(cfg, shape, s.q.data(), s.kc.data(), s.position,
                                              blocks.data());
  return blocks;
}

// The valid entries of group g's row of a block list [Hkv, topk], in order.
inline std::vector<int32_t> row_blocks(const std::vector<int32_t>& list, int g, int topk) {
  std::vector<int32_t> out;
  for (int i = 0; i < topk; ++i)
    if (int32_t b = list[size_t(g) * topk + i]; b >= 0) out.push_back(b);
  return out;
}

inline bool rows_equal(const std::vector<int32_t>& a, const std::vector<int32_t>& b, int g,
                       int topk) {
  return row_blocks(a, g, topk) == row_blocks(b, g, topk);
}

// Blocks of group g's row of a that b's row lacks.
inline std::vector<int32_t> only_in(const std::vector<int32_t>& a, const std::vector<int32_t>& b,
                                    int g, int topk) {
  const std::vector<int32_t> ra = row_blocks(a, g, topk), rb = row_blocks(b, g, topk);
  std::vector<int32_t> out;
  for (int32_t x : ra)
    if (std::find(rb.begin(), rb.end(), x) == rb.end()) out.push_back(x);
  return out;
}

inline std::string list_str(const std::vector<int32_t>& blocks) {
  std::ostringstream out;
  out << "{";
  for (size_t i = 0; i < blocks.size(); ++i) out << (i ? ", " : "") << blocks[i];
  out << "}";
  return out.str();
}

// |ln S_x - ln S_y| between two block scores; 0 when equal, +inf when only one is finite and
// positive (a forced, future or kernel-less block swapped for a scored one).
inline double log_gap(double x, double y) {
  if (x == y) return 0.0;
  if (!(x > 0 && y > 0 && std::isfinite(x) && std::isfinite(y)))
    return std::numeric_limits<double>::infinity();
  return std::abs(std::log(x) - std::log(y));
}

// The largest log_gap between a block only in a's row and one only in b's row of group g, scored
// by S [Hkv, nb]: how far from a tie the blocks the two lists swap are. 0 when the rows agree.
inline double swap_gap(const std::vector<double>& S, int nb, const std::vector<int32_t>& a,
                       const std::vector<int32_t>& b, int g, int topk) {
  double gap = 0;
  for (int32_t x : only_in(a, b, g, topk))
    for (int32_t y : only_in(b, a, g, topk))
      gap = std::max(gap, log_gap(S[size_t(g) * nb + x], S[size_t(g) * nb + y]));
  if (only_in(a, b, g, topk).size() != only_in(b, a, g, topk).size())
    gap = std::numeric_limits<double>::infinity();  // lists of different lengths: never a tie
  return gap;
}

// How far bf16 rounding of the inputs can move group g's block scores apart, as |ln S_a - ln
// S_b|. If every element of q and of the compressed keys may differ between two paths by one bf16
// ulp (at most 2^-7 relative), a logit x_i = scale q_h . kc_i moves by at most
// beta = 2^-6 * scale * sum_d |q_h,d| |kc_i,d| (two inputs, 2^-7 each; the worst case aligns every
// term, which covers the few roundings the paths differ by). The log-sum-exp moves by at most
// max beta, so ln p_h,i moves by at most 2 beta, the pooled score ln S_j too, and two blocks can
// change order only when |ln S_a - ln S_b| <= 4 beta (beta maximized over the group's heads and
// causal compressed keys).
inline double bf16_tie_bound(const attention::SparseConfig& cfg,
                             const attention::AttentionShape& shape, const TokenSelection& s,
                             int g) {
  const int G = shape.Hq / shape.Hkv, n = attention::num_kernels(cfg, s.position + 1);
  double worst = 0;
  for (int h = g * G; h < (g + 1) * G; ++h)
    for (int i = 0; i < n; ++i) {
      double sum = 0;
      for (int d = 0; d < shape.D; ++d)
        sum += std::abs(s.q[size_t(h) * shape.D + d]) *
               std::abs(s.kc[(size_t(i) * shape.Hkv + g) * shape.D + d]);
      worst = std::max(worst, double(shape.scale) * sum);
    }
  return 4.0 * std::ldexp(worst, -6);
}

// The largest log_gap of one block's score between two score sets [Hkv, nb] of group g, over the
// blocks scored in both (finite, positive): how far the two paths' inputs moved the scores.
inline double score_drift(const std::vector<double>& a, const std::vector<double>& b, int nb,
                          int g) {
  double drift = 0;
  for (int j = 0; j < nb; ++j) {
    const double x = a[size_t(g) * nb + j], y = b[size_t(g) * nb + j];
    if (x > 0 && y > 0 && std::isfinite(x) && std::isfinite(y))
      drift = std::max(drift, log_gap(x, y));
  }
  return drift;
}

// Expects `s.blocks` to be the f64 choice on s's own inputs except between blocks whose scores
// are within kF32ScoreTie; `who` names the path in the failure.
inline void expect_exact_on_own_inputs(const attention::SparseConfig& cfg,
                                       const attention::AttentionShape& shape,
                                       const TokenSelection& s, const std::string& who) {
  const std::vector<int32_t> exact = f64_blocks(cfg, shape, s);
  if (exact == s.blocks) return;
  const std::vector<double> S = f64_block_scores(cfg, shape, s);
  const int nb = attention::num_blocks(cfg, s.position + 1);
  for (int g = 0; g < shape.Hkv; ++g) {
    const double gap = swap_gap(S, nb, s.blocks, exact, g, cfg.topk);
    EXPECT_LE(gap, kF32ScoreTie) << who << " at position " << s.position << ", group " << g
                                 << ": chose " << list_str(row_blocks(s.blocks, g, cfg.topk))
                                 << ", the f64 choice on the same inputs is "
                                 << list_str(row_blocks(exact, g, cfg.topk))
                                 << "; their swapped blocks' scores differ by " << gap
                                 << " in ln S, more than f32 rounding: a bug in that selection";
  }
}

// The training selection of the last row of every full-sequence attention call it observes (one
// per layer and forward pass, in call order), with the inputs it was made from: q of that row,
// the compressed keys of k (append_compressed_keys, bit for bit compress_keys on the GPU) and
// select_attention_blocks' list, all copied to the host.
class LastRowProbe : public AttentionObserver {
 public:
  explicit LastRowProbe(const attention::SparseConfig& cfg) : cfg_(cfg) {}
  void observe(const Tensor& q, const Tensor& k) override {
    const int64_t T = q.size(1), Hkv = k.size(2), D = k.size(3);
    TokenSelection s;
    s.position = int(T - 1);
    s.q = as_f64(q.select(1, T - 1));
    Tensor keys = k.contiguous().reshape({T, Hkv, D});
    Tensor kc =
        Tensor::empty({attention::num_kernels(cfg_, int(T)), Hkv, D}, k.dtype(), k.device());
    append_compressed_keys(keys, kc, 0, T, cfg_);
    s.kc = as_f64(kc);
    s.blocks = select_attention_blocks(q, k, cfg_).select(1, T - 1).to_vector<int32_t>();
    rows.push_back(std::move(s));
  }
  std::vector<TokenSelection> rows;

 private:
  attention::SparseConfig cfg_;
};

// Layer `layer`'s decode selection of the last step `cache` took (KvCache::last_decode), with the
// compressed keys it read, on the host.
inline TokenSelection decoded_selection(const KvCache& cache, int64_t layer) {
  const KvCache::DecodeRecord& record = cache.last_decode(layer);
  TokenSelection s;
  s.position = int(cache.length() - 1);
  s.q = as_f64(record.q);
  s.blocks = record.blocks.to_vector<int32_t>();
  const int n = attention::num_kernels(cache.sparse_config(), s.position + 1);
  s.kc = as_f64(cache.layer(layer).kc.slice(0, 0, n));
  return s;
}

}  // namespace infllm::testing
