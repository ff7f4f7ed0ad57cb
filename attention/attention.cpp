#include "attention/attention.h"

#include <cmath>

#include "attention/flash_attention.h"
#include "autograd/node.h"
#include "core/dispatch.h"

namespace infllm {
namespace {

using attention::AttentionShape;
using attention::BlockList;

AttentionShape shape_of(const Tensor& q, const Tensor& k) {
  INFLLM_CHECK(q.dim() == 4 && k.dim() == 4,
               "attention: expected q [B, T, Hq, D] and k [B, T, "
               "Hkv, D], got ",
               q.str(), " and ", k.str());
  INFLLM_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3) &&
                   q.size(2) % k.size(2) == 0,
               "attention: q ", q.str(), " and k ", k.str(),
               " disagree on B, T or D, or Hkv does "
               "not divide Hq");
  AttentionShape shape;
  shape.B = int(q.size(0));
  shape.T = int(q.size(1));
  shape.Hq = int(q.size(2));
  shape.Hkv = int(k.size(2));
  shape.D = int(q.size(3));
  shape.scale = float(1.0 / std::sqrt(double(shape.D)));
  return shape;
}

BlockList block_list(const Tensor& blocks, int block_size) {
  if (!blocks.defined()) return {};
  return {blocks.data<int32_t>(), int(blocks.size(3)), block_size};
}

}  // namespace

Tensor select_attention_blocks(const Tensor& q_in, const Tensor& k_in,
                               const attention::SparseConfig& config) {
  attention::check_sparse_config("select_attention_blocks", config);
  Tensor q = q_in.contiguous(), k = k_in.contiguous();
  AttentionShape shape = shape_of(q, k);
  Tensor blocks =
      Tensor::empty({q.size(0), q.size(1), k.size(2), config.topk}, DType::i32, q.device());
  if (q.device().is_cuda()) {
    INFLLM_IF_CUDA(attention::cuda::select_blocks(config, shape, bf16_bits(q), bf16_bits(k),
                                                  blocks.data<int32_t>(), device_stream(q.device()),
                                                  nullptr));
  } else {
    visit_f32_f64(q.dtype(), "select_attention_blocks", [&]<class T>() {
      attention::cpu::select_blocks<T>(config, shape, q.data<T>(), k.data<T>(),
                                       blocks.data<int32_t>());
    });
  }
  return blocks;
}

Tensor causal_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                        const AttentionOptions& options) {
  Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  AttentionShape shape = shape_of(q, k);
  INFLLM_CHECK(v.shape() == k.shape() && q.dtype() == k.dtype() && k.dtype() == v.dtype() &&
                   q.device() == k.device() && k.device() == v.device(),
               "attention: v ", v.str(), " must match k ", k.str(), " (and q ", q.str(),
               " in dtype and device)");
  Device device = q.device();
  bool sparse = attention::use_sparse(options.mode, shape.T, options.sparse.dense_len);
  Tensor blocks = sparse ? select_attention_blocks(q, k, options.sparse) : Tensor();
  BlockList list = block_list(blocks, options.sparse.block_size);
  attention::check_attention_shape("attention", shape, list);

  Tensor out = Tensor::empty(q.shape(), q.dtype(), device);
  DType lse_dtype = device.is_cuda() ? DType::f32 : q.dtype();
  Tensor lse = Tensor::empty({q.size(0), q.size(2), q.size(1)}, lse_dtype, device);
  if (device.is_cuda()) {
    INFLLM_CHECK(q.dtype() == DType::bf16, "attention: CUDA takes bf16, got ", q.str());
    INFLLM_IF_CUDA(attention::cuda::attention_forward(
        shape, bf16_bits(q), bf16_bits(k), bf16_bits(v), list, bf16_bits(out), lse.data<float>(),
        device_stream(q.device())));
  } else {
    visit_f32_f64(q.dtype(), "attention", [&]<class T>() {
      attention::cpu::attention_forward<T>(shape, q.data<T>(), k.data<T>(), v.data<T>(), list,
                                           out.data<T>(), lse.data<T>());
    });
  }
  Tensor sq = q.detach(), sk = k.detach(), sv = v.detach(), so = out.detach();
  int block_size = options.sparse.block_size;
  return autograd::record("attention", {q_in, k_in, v_in}, out, [=](const std::vector<Tensor>& g) {
    Tensor dout = g[0].contiguous();
    Tensor dq = Tensor::empty(sq.shape(), sq.dtype(), device);
    Tensor dk = Tensor::empty(sk.shape(), sk.dtype(), device);
    Tensor dv = Tensor::empty(sv.shape(), sv.dtype(), device);
    BlockList saved_list = block_list(blocks, block_size);
    if (device.is_cuda()) {
      INFLLM_IF_CUDA(attention::cuda::attention_backward(
          shape, bf16_bits(sq), bf16_bits(sk), bf16_bits(sv), bf16_bits(so), lse.data<float>(),
          bf16_bits(dout), saved_list, bf16_bits(dq), bf16_bits(dk), bf16_bits(dv),
          device_stream(device)));
    } else {
      visit_f32_f64(sq.dtype(), "attention_backward", [&]<class T>() {
        attention::cpu::attention_backward<T>(shape, sq.data<T>(), sk.data<T>(), sv.data<T>(),
                                              so.data<T>(), lse.data<T>(), dout.data<T>(),
                                              saved_list, dq.data<T>(), dk.data<T>(), dv.data<T>());
      });
    }
    return std::vector<Tensor>{dq, dk, dv};
  });
}

}  // namespace infllm
