#include "attention/block_list_attention.h"

#include "attention/attention.h"
#include "attention/flash_attention.h"
#include "autograd/node.h"
#include "core/dispatch.h"
#include "core/ops.h"

namespace infllm {
namespace {

using attention::AttentionShape;
using attention::BlockList;

// q, k, v and blocks checked: v like k, one dtype and device, blocks [B, T, Hkv, max_blocks].
AttentionShape checked_shape(const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& blocks) {
  const AttentionShape shape = attention_shape("block_list_attention", q, k);
  INFLLM_CHECK(v.shape() == k.shape(), "block_list_attention: v ", v.str(), " must match k ",
               k.str());
  INFLLM_CHECK(q.dtype() == k.dtype() && k.dtype() == v.dtype() && q.device() == k.device() &&
                   k.device() == v.device(),
               "block_list_attention: q ", q.str(), ", k ", k.str(), " and v ", v.str(),
               " must share dtype and device");
  INFLLM_CHECK(blocks.dim() == 4 && blocks.dtype() == DType::i32 && blocks.size(0) == q.size(0) &&
                   blocks.size(1) == q.size(1) && blocks.size(2) == k.size(2) &&
                   blocks.device() == q.device() && blocks.is_contiguous(),
               "block_list_attention: blocks must be contiguous i32 [B, T, Hkv, max_blocks] on ",
               q.device().str(), ", got ", blocks.str());
  return shape;
}

}  // namespace

Tensor block_list_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                            const Tensor& blocks, int block_size) {
  Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const AttentionShape shape = checked_shape(q, k, v, blocks);
  const BlockList list{blocks.data<int32_t>(), int(blocks.size(3)), block_size};
  attention::check_attention_shape("block_list_attention", shape, list);
  const Device device = q.device();
  const bool cuda = device.is_cuda();
  INFLLM_CHECK(!cuda || q.dtype() == DType::bf16, "block_list_attention: CUDA takes bf16, got ",
               q.str());
  Tensor out = Tensor::empty(q.shape(), q.dtype(), device);
  Tensor lse =
      Tensor::empty({q.size(0), q.size(2), q.size(1)}, cuda ? DType::f32 : q.dtype(), device);
  if (cuda) {
    attention::cuda::attention_forward(shape, bf16_bits(q), bf16_bits(k), bf16_bits(v), list,
                                       bf16_bits(out), lse.data<float>(), device_stream(device));
  } else {
    visit_f32_f64(q.dtype(), "block_list_attention", [&]<class T>() {
      attention::cpu::attention_forward<T>(shape, q.data<T>(), k.data<T>(), v.data<T>(), list,
                                           out.data<T>(), lse.data<T>());
    });
  }
  Tensor sq = q.detach(), sk = k.detach(), sv = v.detach(), so = out.detach();
  return autograd::record(
      "block_list_attention", {q_in, k_in, v_in}, out, [=](const std::vector<Tensor>& g) {
        // The kernels read the upstream gradient in the output's dtype.
        Tensor dout = g[0].dtype() == so.dtype() ? g[0].contiguous() : ops::cast(g[0], so.dtype());
        Tensor dq = Tensor::empty(sq.shape(), sq.dtype(), device);
        Tensor dk = Tensor::empty(sk.shape(), sk.dtype(), device);
        Tensor dv = Tensor::empty(sv.shape(), sv.dtype(), device);
        const BlockList saved{blocks.data<int32_t>(), int(blocks.size(3)), block_size};
        if (cuda) {
          attention::cuda::attention_backward(shape, bf16_bits(sq), bf16_bits(sk), bf16_bits(sv),
                                              bf16_bits(so), lse.data<float>(), bf16_bits(dout),
                                              saved, bf16_bits(dq), bf16_bits(dk), bf16_bits(dv),
                                              device_stream(device));
        } else {
          visit_f32_f64(sq.dtype(), "block_list_attention_backward", [&]<class T>() {
            attention::cpu::attention_backward<T>(shape, sq.data<T>(), sk.data<T>(), sv.data<T>(),
                                                  so.data<T>(), lse.data<T>(), dout.data<T>(),
                                                  saved, dq.data<T>(), dk.data<T>(), dv.data<T>());
          });
        }
        return std::vector<Tensor>{dq, dk, dv};
      });
}

}  // namespace infllm
