#include "attention/nsa.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "attention/block_list_attention.h"
#include "autograd/functions.h"
#include "core/config_check.h"
#include "core/dispatch.h"
#include "core/error.h"

namespace infllm::attention {

std::span<const EnumName<AttentionVariant>> enum_names(AttentionVariant) {
  static constexpr EnumName<AttentionVariant> names[] = {{AttentionVariant::infllm_v2, "infllm_v2"},
                                                         {AttentionVariant::nsa, "nsa"}};
  return names;
}

void check_nsa_config(const NsaConfig& nsa, const SparseConfig& cfg, const ConfigCheck& check) {
  check.require(nsa.window_size >= cfg.block_size && nsa.window_size % cfg.block_size == 0,
                {"nsa_window", "block_size"},
                "must be a positive multiple of " + check.key("block_size") + " = " +
                    std::to_string(cfg.block_size) + ", got " + std::to_string(nsa.window_size),
                "the window branch attends to whole blocks: use e.g. 512 with block_size 64");
}

void check_nsa_config(const char* op, const NsaConfig& nsa, const SparseConfig& cfg) {
  check_sparse_config(op, cfg);
  check_nsa_config(nsa, cfg, ConfigCheck(op));
}

}  // namespace infllm::attention

namespace infllm {
namespace {

using attention::SparseConfig;

void check_compression(const Tensor& x, const NsaCompression& c, const SparseConfig& cfg) {
  INFLLM_CHECK(x.dim() == 4, "nsa_compress: expected x [B, T, Hkv, D], got ", x.str());
  const int64_t H = x.size(2), D = x.size(3), l = cfg.kernel_size;
  INFLLM_CHECK(c.pe.defined() && c.w1.defined() && c.w2.defined() &&
                   c.pe.shape() == Shape({H, l, D}) && c.w1.dim() == 3 && c.w1.size(0) == H &&
                   c.w1.size(2) == l * D && c.w2.dim() == 3 && c.w2.size(0) == H &&
                   c.w2.size(1) == D && c.w2.size(2) == c.w1.size(1),
               "nsa_compress: for x ", x.str(), " and kernel_size ", l,
               " the compression needs pe [Hkv, l, D], w1 [Hkv, hidden, l D] and w2 [Hkv, D, "
               "hidden], got pe ",
               c.pe.str(), ", w1 ", c.w1.str(), ", w2 ", c.w2.str());
  INFLLM_CHECK(cfg.kernel_size % cfg.kernel_stride == 0,
               "nsa_compress: kernel_size=", cfg.kernel_size,
               " is not a multiple of kernel_stride=", cfg.kernel_stride);
}

}  // namespace

Tensor nsa_compress(const Tensor& x, const NsaCompression& c, const SparseConfig& cfg) {
  check_compression(x, c, cfg);
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  const int64_t l = cfg.kernel_size, s = cfg.kernel_stride, m = l / s;
  const int64_t nk = attention::num_kernels(cfg, int(T));
  if (nk == 0) return ops::zeros({B, 0, H, D}, x.dtype(), x.device());
  // Kernel i is strides i .. i + m - 1 of s tokens each: m shifted views of the strides.
  Tensor strides = reshape(slice(x, 1, 0, (nk + m - 1) * s), {B, nk + m - 1, s, H, D});
  std::vector<Tensor> parts;
  for (int64_t u = 0; u < m; ++u) parts.push_back(slice(strides, 1, u, u + nk));
  Tensor kernels = m == 1 ? parts[0] : concat(parts, 2);         // [B, nk, l, H, D]
  kernels = add(kernels, contiguous(permute(c.pe, {1, 0, 2})));  // + pe as [l, H, D]
  Tensor rows = reshape(permute(kernels, {3, 0, 1, 2, 4}), {H, B * nk, l * D});
  Tensor hidden = gelu(matmul(rows, c.w1, false, true));  // [H, B nk, hidden]
  Tensor out = matmul(hidden, c.w2, false, true);         // [H, B nk, D]
  return contiguous(permute(reshape(out, {H, B, nk, D}), {1, 2, 0, 3}));
}

// Query t sees kernels 0 .. (t - l + 1) / s, so the s tokens l - 1 + j s .. l - 1 + j s + s - 1
// share kernels 0 .. j: folded into s query heads of one row j, a dense causal attention of nk
// rows over the nk kernels is exactly the compressed branch. Row j's heads are ordered (query
// head, token in stride), so the G s heads of KV group g stay contiguous, as GQA needs.
Tensor nsa_compressed_attention(const Tensor& q, const Tensor& kc, const Tensor& vc,
                                const SparseConfig& cfg) {
  INFLLM_CHECK(q.dim() == 4 && kc.dim() == 4 && vc.shape() == kc.shape() &&
                   kc.size(0) == q.size(0) && kc.size(3) == q.size(3),
               "nsa_compressed_attention: expected q [B, T, Hq, D] and kc, vc [B, nk, Hkv, D], "
               "got ",
               q.str(), ", ", kc.str(), ", ", vc.str());
  const int64_t B = q.size(0), T = q.size(1), Hq = q.size(2), D = q.size(3), nk = kc.size(1);
  const int64_t s = cfg.kernel_stride, first = cfg.kernel_size - 1;
  INFLLM_CHECK(nk == attention::num_kernels(cfg, int(T)), "nsa_compressed_attention: ", nk,
               " compressed rows for T=", T,
               "; expected num_kernels = ", attention::num_kernels(cfg, int(T)));
  if (nk == 0) return ops::zeros(q.shape(), q.dtype(), q.device());
  const int64_t n = T - first, rows = nk * s;  // n <= rows < n + s
  Tensor qs = slice(q, 1, first, T);
  if (rows > n) qs = concat({qs, ops::zeros({B, rows - n, Hq, D}, q.dtype(), q.device())}, 1);
  Tensor folded =
      reshape(permute(reshape(qs, {B, nk, s, Hq, D}), {0, 1, 3, 2, 4}), {B, nk, Hq * s, D});
  AttentionOptions dense;
  dense.mode = attention::AttentionMode::dense;
  Tensor out = causal_attention(folded, kc, vc, dense);  // [B, nk, Hq s, D]
  Tensor unfolded =
      reshape(permute(reshape(out, {B, nk, Hq, s, D}), {0, 1, 3, 2, 4}), {B, rows, Hq, D});
  return concat({ops::zeros({B, first, Hq, D}, q.dtype(), q.device()), slice(unfolded, 1, 0, n)},
                1);
}

Tensor nsa_select_blocks(const Tensor& q_in, const Tensor& kc_in, const SparseConfig& cfg) {
  attention::check_sparse_config("nsa_select_blocks", cfg);
  Tensor q = q_in.detach().contiguous(), kc = kc_in.detach().contiguous();
  INFLLM_CHECK(q.dim() == 4 && kc.dim() == 4 && kc.size(0) == q.size(0) &&
                   kc.size(3) == q.size(3) && q.size(2) % kc.size(2) == 0 &&
                   kc.size(1) == attention::num_kernels(cfg, int(q.size(1))) &&
                   q.dtype() == kc.dtype() && q.device() == kc.device(),
               "nsa_select_blocks: expected q [B, T, Hq, D] and kc [B, num_kernels, Hkv, D] of one "
               "dtype and device, got ",
               q.str(), " and ", kc.str());
  attention::AttentionShape shape;
  shape.B = int(q.size(0));
  shape.T = int(q.size(1));
  shape.Hq = int(q.size(2));
  shape.Hkv = int(kc.size(2));
  shape.D = int(q.size(3));
  shape.scale = float(1.0 / std::sqrt(double(shape.D)));
  Tensor blocks =
      Tensor::empty({q.size(0), q.size(1), kc.size(2), cfg.topk}, DType::i32, q.device());
  if (q.device().is_cuda()) {
    attention::cuda::select_blocks_compressed(cfg, shape, bf16_bits(q), bf16_bits(kc),
                                              blocks.data<int32_t>(), device_stream(q.device()));
  } else {
    visit_f32_f64(q.dtype(), "nsa_select_blocks", [&]<class T>() {
      attention::cpu::select_blocks_compressed<T>(cfg, shape, q.data<T>(), kc.data<T>(),
                                                  blocks.data<int32_t>());
    });
  }
  return blocks;
}

Tensor sliding_window_blocks(int64_t B, int64_t T, int64_t Hkv, int block_size, int window_size,
                             Device device) {
  INFLLM_CHECK(block_size > 0 && window_size >= block_size && window_size % block_size == 0,
               "sliding_window_blocks: window_size=", window_size,
               " must be a positive multiple of block_size=", block_size);
  const int L = window_size / block_size;
  std::vector<int32_t> lists(size_t(B * T * Hkv) * L);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int own = int(t / block_size), first = std::max(0, own - L + 1);
      for (int64_t h = 0; h < Hkv; ++h) {
        int32_t* row = &lists[size_t((b * T + t) * Hkv + h) * L];
        for (int i = 0; i < L; ++i) row[i] = first + i <= own ? first + i : -1;
      }
    }
  return Tensor::from_vector(lists, {B, T, Hkv, L}).to(device);
}

NsaBranches nsa_branches(const Tensor& q, const Tensor& k, const Tensor& v, const NsaWeights& w,
                         const SparseConfig& cfg, const attention::NsaConfig& nsa) {
  attention::check_nsa_config("nsa_attention", nsa, cfg);
  INFLLM_CHECK(q.dim() == 4 && k.dim() == 4 && v.shape() == k.shape(),
               "nsa_attention: expected q [B, T, Hq, D] and k, v [B, T, Hkv, D], got ", q.str(),
               ", ", k.str(), ", ", v.str());
  const Tensor kc = nsa_compress(k, w.key, cfg), vc = nsa_compress(v, w.value, cfg);
  if (nsa.observer) nsa.observer->observe(q, k, kc);
  NsaBranches out;
  out.compressed = nsa_compressed_attention(q, kc, vc, cfg);
  out.blocks = nsa_select_blocks(q, kc, cfg);
  out.selected = block_list_attention(q, k, v, out.blocks, cfg.block_size);
  out.window =
      block_list_attention(q, k, v,
                           sliding_window_blocks(k.size(0), k.size(1), k.size(2), cfg.block_size,
                                                 nsa.window_size, k.device()),
                           cfg.block_size);
  return out;
}

Tensor nsa_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gate_logits,
                     const NsaWeights& w, const SparseConfig& cfg,
                     const attention::NsaConfig& nsa) {
  INFLLM_CHECK(gate_logits.dim() == 4 && gate_logits.size(0) == q.size(0) &&
                   gate_logits.size(1) == q.size(1) && gate_logits.size(2) == q.size(2) &&
                   gate_logits.size(3) == 3,
               "nsa_attention: gate_logits must be [B, T, Hq, 3] for q ", q.str(), ", got ",
               gate_logits.str());
  const NsaBranches b = nsa_branches(q, k, v, w, cfg, nsa);
  const Tensor gates = sigmoid(gate_logits);
  const Tensor out =
      add(mul(slice(gates, 3, 0, 1), b.compressed), mul(slice(gates, 3, 1, 2), b.selected));
  return add(out, mul(slice(gates, 3, 2, 3), b.window));
}

}  // namespace infllm
