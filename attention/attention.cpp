#include "attention/attention.h"

#include <algorithm>
#include <cmath>

#include "attention/flash_attention.h"
#include "autograd/functions.h"
#include "autograd/node.h"
#include "core/dispatch.h"
#include "core/ops.h"

namespace infllm {
namespace {

using attention::AttentionShape;
using attention::BlockList;

BlockList block_list(const Tensor& blocks, int block_size) {
  if (!blocks.defined()) return {};
  return {blocks.data<int32_t>(), int(blocks.size(3)), block_size};
}

}  // namespace

attention::AttentionShape attention_shape(const char* op, const Tensor& q, const Tensor& k) {
  INFLLM_CHECK(q.dim() == 4 && k.dim() == 4, op,
               ": expected q [B, T, Hq, D] and k [B, T, Hkv, D], got ", q.str(), " and ", k.str());
  INFLLM_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3) &&
                   q.size(2) % k.size(2) == 0,
               op, ": q ", q.str(), " and k ", k.str(),
               " disagree on B, T or D, or Hkv does not divide Hq");
  AttentionShape shape;
  shape.B = int(q.size(0));
  shape.T = int(q.size(1));
  shape.Hq = int(q.size(2));
  shape.Hkv = int(k.size(2));
  shape.D = int(q.size(3));
  shape.scale = float(1.0 / std::sqrt(double(shape.D)));
  return shape;
}

Tensor select_attention_blocks(const Tensor& q_in, const Tensor& k_in,
                               const attention::SparseConfig& config) {
  attention::check_sparse_config("select_attention_blocks", config);
  Tensor q = q_in.contiguous(), k = k_in.contiguous();
  AttentionShape shape = attention_shape("select_attention_blocks", q, k);
  Tensor blocks =
      Tensor::empty({q.size(0), q.size(1), k.size(2), config.topk}, DType::i32, q.device());
  if (q.device().is_cuda()) {
    attention::cuda::select_blocks(config, shape, bf16_bits(q), bf16_bits(k),
                                   blocks.data<int32_t>(), device_stream(q.device()), nullptr);
  } else {
    visit_f32_f64(q.dtype(), "select_attention_blocks", [&]<class T>() {
      attention::cpu::select_blocks<T>(config, shape, q.data<T>(), k.data<T>(),
                                       blocks.data<int32_t>());
    });
  }
  return blocks;
}

namespace {

// Adds the overlap of `chosen` (a call's block lists, on the host) with the exact reference's.
void record_selection_agreement(SelectionAgreement& agreement, const Tensor& chosen,
                                const Tensor& exact, int topk) {
  const attention::BlockOverlap o = attention::block_overlap(
      chosen.data<int32_t>(), exact.data<int32_t>(), size_t(chosen.numel() / topk), topk);
  agreement.common += o.common;
  agreement.chosen += o.in_a;
}

// The f32/f64 reference on separate contiguous q, k, v.
Tensor cpu_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                     const AttentionOptions& options) {
  Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  AttentionShape shape = attention_shape("attention", q, k);
  INFLLM_CHECK(v.shape() == k.shape() && q.dtype() == k.dtype() && k.dtype() == v.dtype() &&
                   q.device() == k.device() && k.device() == v.device(),
               "attention: v ", v.str(), " must match k ", k.str(), " (and q ", q.str(),
               " in dtype and device)");
  if (options.observer) options.observer->observe(q, k);
  bool sparse = attention::use_sparse(options.mode, shape.T, options.sparse.dense_len);
  Tensor blocks = sparse ? select_attention_blocks(q, k, options.sparse) : Tensor();
  if (sparse && options.selection_agreement)  // the CPU selection is the exact reference
    record_selection_agreement(*options.selection_agreement, blocks, blocks, options.sparse.topk);
  int block_size = options.sparse.block_size;
  BlockList list = block_list(blocks, block_size);
  attention::check_attention_shape("attention", shape, list);

  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty({q.size(0), q.size(2), q.size(1)}, q.dtype(), q.device());
  visit_f32_f64(q.dtype(), "attention", [&]<class T>() {
    attention::cpu::attention_forward<T>(shape, q.data<T>(), k.data<T>(), v.data<T>(), list,
                                         out.data<T>(), lse.data<T>());
  });
  Tensor sq = q.detach(), sk = k.detach(), sv = v.detach(), so = out.detach();
  return autograd::record("attention", {q_in, k_in, v_in}, out, [=](const std::vector<Tensor>& g) {
    Tensor dout = g[0].contiguous();
    Tensor dq = Tensor::empty(sq.shape(), sq.dtype(), sq.device());
    Tensor dk = Tensor::empty(sk.shape(), sk.dtype(), sk.device());
    Tensor dv = Tensor::empty(sv.shape(), sv.dtype(), sv.device());
    visit_f32_f64(sq.dtype(), "attention_backward", [&]<class T>() {
      attention::cpu::attention_backward<T>(
          shape, sq.data<T>(), sk.data<T>(), sv.data<T>(), so.data<T>(), lse.data<T>(),
          dout.data<T>(), block_list(blocks, block_size), dq.data<T>(), dk.data<T>(), dv.data<T>());
    });
    return std::vector<Tensor>{dq, dk, dv};
  });
}

// The CUDA kernels on packed rows: q, k, v are head ranges of one [B, T, Hq + 2 Hkv, D] tensor,
// read in place through the token strides, and the backward writes one packed gradient.
Tensor cuda_packed_attention(const Tensor& qkv_in, int Hq, int Hkv,
                             const AttentionOptions& options) {
  Tensor qkv = qkv_in.contiguous();
  INFLLM_CHECK(qkv.dtype() == DType::bf16, "attention: CUDA takes bf16, got ", qkv.str());
  AttentionShape shape;
  shape.B = int(qkv.size(0));
  shape.T = int(qkv.size(1));
  shape.Hq = Hq;
  shape.Hkv = Hkv;
  shape.D = int(qkv.size(3));
  shape.scale = float(1.0 / std::sqrt(double(shape.D)));
  shape.q_row = shape.kv_row = int64_t(Hq + 2 * Hkv) * shape.D;
  const int64_t k_offset = int64_t(Hq) * shape.D, v_offset = int64_t(Hq + Hkv) * shape.D;
  Device device = qkv.device();
  void* stream = device_stream(device);
  const uint16_t* q = bf16_bits(qkv);
  if (options.observer) options.observer->observe(qkv.slice(2, 0, Hq), qkv.slice(2, Hq, Hq + Hkv));

  Tensor blocks;
  if (attention::use_sparse(options.mode, shape.T, options.sparse.dense_len)) {
    attention::check_sparse_config("attention", options.sparse);
    blocks = Tensor::empty({shape.B, shape.T, Hkv, options.sparse.topk}, DType::i32, device);
    attention::cuda::select_blocks(options.sparse, shape, q, q + k_offset, blocks.data<int32_t>(),
                                   stream, nullptr);
    if (options.selection_agreement) {  // the exact reference on the same q, k (as f32)
      attention::SparseConfig exact = options.sparse;
      exact.lse_stride = 1;
      auto host_f32 = [&](int64_t h0, int64_t h1) {
        return cast(qkv.slice(2, h0, h1), DType::f32).to(Device::cpu());
      };
      record_selection_agreement(
          *options.selection_agreement, blocks.to(Device::cpu()),
          select_attention_blocks(host_f32(0, Hq), host_f32(Hq, Hq + Hkv), exact), exact.topk);
    }
  }
  int block_size = options.sparse.block_size;
  attention::check_attention_shape("attention", shape, block_list(blocks, block_size));

  Tensor out = Tensor::empty({shape.B, shape.T, Hq, shape.D}, DType::bf16, device);
  Tensor lse = Tensor::empty({shape.B, Hq, shape.T}, DType::f32, device);
  attention::cuda::attention_forward(shape, q, q + k_offset, q + v_offset,
                                     block_list(blocks, block_size), bf16_bits(out),
                                     lse.data<float>(), stream);
  Tensor saved = qkv.detach(), so = out.detach();
  return autograd::record("attention", {qkv_in}, out, [=](const std::vector<Tensor>& g) {
    Tensor dout = g[0].contiguous();
    Tensor dqkv = Tensor::empty(saved.shape(), DType::bf16, device);  // every element written
    const uint16_t* sq = bf16_bits(saved);
    uint16_t* dq = bf16_bits(dqkv);
    attention::cuda::attention_backward(
        shape, sq, sq + k_offset, sq + v_offset, bf16_bits(so), lse.data<float>(), bf16_bits(dout),
        block_list(blocks, block_size), dq, dq + k_offset, dq + v_offset, device_stream(device));
    return std::vector<Tensor>{dqkv};
  });
}

}  // namespace

double attention_flops_per_token(const AttentionOptions& options, int64_t T, int64_t Hq,
                                 int64_t D) {
  INFLLM_CHECK(T > 0, "attention_flops_per_token: T=", T, " must be positive");
  // Sum over tokens t < T of min(t + 1, keys): the (query, key) pairs of a causal pass in which
  // no token sees more than `keys` keys.
  auto pairs = [T](double keys) {
    const double n = double(T), k = std::min(keys, n);
    return k * (k + 1) / 2 + (n - k) * k;
  };
  const double per_pair = 4.0 * double(Hq) * double(D);  // Q K^T and P V, forward
  const attention::SparseConfig& cfg = options.sparse;
  double forward_backward = pairs(double(T)), forward_only = 0;
  if (attention::use_sparse(options.mode, int(T), cfg.dense_len)) {
    const double selected = pairs(double(cfg.topk) * cfg.block_size);
    // Compressed keys: one per kernel_stride tokens of the past.
    const double compressed = pairs(double(T)) / cfg.kernel_stride;
    if (options.variant == attention::AttentionVariant::nsa) {
      forward_backward = compressed + selected + pairs(double(options.nsa.window_size));
    } else {
      forward_backward = selected;
      forward_only = compressed / 2;  // Q K^T alone
    }
  }
  return per_pair * (3.0 * forward_backward + forward_only) / double(T);
}

Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                        const AttentionOptions& options) {
  if (!q.device().is_cuda()) return cpu_attention(q, k, v, options);
  attention_shape("attention", q, k);
  INFLLM_CHECK(v.shape() == k.shape(), "attention: v ", v.str(), " must match k ", k.str());
  return causal_attention_packed(concat({q, k, v}, 2), q.size(2), k.size(2), options);
}

Tensor causal_attention_packed(const Tensor& qkv, int64_t Hq, int64_t Hkv,
                               const AttentionOptions& options) {
  INFLLM_CHECK(qkv.dim() == 4 && Hq > 0 && Hkv > 0 && qkv.size(2) == Hq + 2 * Hkv,
               "attention: expected packed qkv [B, T, Hq + 2 Hkv, D] with Hq=", Hq, " Hkv=", Hkv,
               ", got ", qkv.str());
  if (qkv.device().is_cuda()) {
    return cuda_packed_attention(qkv, int(Hq), int(Hkv), options);
  }
  return cpu_attention(slice(qkv, 2, 0, Hq), slice(qkv, 2, Hq, Hq + Hkv),
                       slice(qkv, 2, Hq + Hkv, Hq + 2 * Hkv), options);
}

}  // namespace infllm
