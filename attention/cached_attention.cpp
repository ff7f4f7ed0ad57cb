#include "attention/cached_attention.h"

#include <cmath>

#include "attention/decode_attention.h"
#include "core/device.h"
#include "core/dtype.h"

namespace infllm {
namespace {

using attention::DecodeShape;

// q [Hq, D] against a cache [L, Hkv, D] (keys or compressed keys) at `position`.
DecodeShape decode_shape(const char* op, const Tensor& q, const Tensor& k, int64_t position) {
  INFLLM_CHECK(q.dim() == 2 && k.dim() == 3 && q.size(1) == k.size(2) && k.size(1) > 0 &&
                   q.size(0) % k.size(1) == 0,
               op, ": expected q [Hq, D] and a cache [L, Hkv, D] with Hkv dividing Hq, got ",
               q.str(), " and ", k.str());
  INFLLM_CHECK(position >= 0 && position < (int64_t(1) << 31), op, ": position ", position,
               " is outside [0, 2^31)");
  INFLLM_CHECK(
      q.is_contiguous() && k.is_contiguous() && q.dtype() == k.dtype() && q.device() == k.device(),
      op, ": q ", q.str(), " and the cache ", k.str(),
      " must be contiguous, of one dtype, on one device");
  DecodeShape s;
  s.Hq = int(q.size(0));
  s.Hkv = int(k.size(1));
  s.D = int(q.size(1));
  s.scale = float(1.0 / std::sqrt(double(s.D)));
  s.position = int(position);
  return s;
}

void check_kc(const char* op, const Tensor& kc, const Tensor& k,
              const attention::SparseConfig& config, int64_t end) {
  INFLLM_CHECK(kc.defined() && kc.dim() == 3 && kc.size(1) == k.size(1) &&
                   kc.size(2) == k.size(2) && kc.is_contiguous() && kc.dtype() == k.dtype() &&
                   kc.device() == k.device(),
               op, ": compressed keys ", kc.defined() ? kc.str() : "(none)",
               " must be a contiguous [Lk, Hkv, D] tensor beside the cache ", k.str());
  INFLLM_CHECK(attention::num_kernels(config, int(end)) <= kc.size(0), op, ": ",
               attention::num_kernels(config, int(end)), " compressed keys for ", end,
               " positions do not fit the ", kc.size(0), " rows of kc");
}

}  // namespace

bool decode_uses_sparse(const AttentionOptions& options, int64_t position) {
  return options.variant == attention::AttentionVariant::infllm_v2 &&
         attention::use_sparse(options.mode, int(position + 1), options.sparse.dense_len);
}

Tensor select_decode_blocks(const Tensor& q, const Tensor& kc, int64_t position,
                            const attention::SparseConfig& config) {
  attention::check_sparse_config("select_decode_blocks", config);
  const DecodeShape at = decode_shape("select_decode_blocks", q, kc, position);
  INFLLM_CHECK(attention::num_kernels(config, int(position + 1)) <= kc.size(0),
               "select_decode_blocks: position ", position, " needs ",
               attention::num_kernels(config, int(position + 1)), " compressed keys, kc holds ",
               kc.size(0));
  Tensor blocks = Tensor::empty({kc.size(1), config.topk}, DType::i32, q.device());
  if (q.device().is_cuda()) {
    INFLLM_CHECK(q.dtype() == DType::bf16, "select_decode_blocks: CUDA takes bf16, got ", q.str());
    Tensor workspace =
        scratch(attention::cuda::select_decode_blocks_workspace_bytes(config, at), q.device());
    attention::cuda::select_decode_blocks(config, at, bf16_bits(q), bf16_bits(kc),
                                          blocks.data<int32_t>(), workspace.data_ptr(),
                                          device_stream(q.device()));
  } else {
    visit_f32_f64(q.dtype(), "select_decode_blocks", [&]<class T>() {
      attention::cpu::select_decode_blocks<T>(config, at, q.data<T>(), kc.data<T>(),
                                              blocks.data<int32_t>());
    });
  }
  return blocks;
}

Tensor decode_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& kc,
                        int64_t position, const AttentionOptions& options, Tensor* selected) {
  const DecodeShape s = decode_shape("decode_attention", q, k, position);
  INFLLM_CHECK(position < k.size(0), "decode_attention: position ", position,
               " is outside the cache of ", k.size(0), " positions");
  INFLLM_CHECK(v.shape() == k.shape() && v.dtype() == k.dtype() && v.device() == k.device() &&
                   v.is_contiguous(),
               "decode_attention: the value cache ", v.str(), " must match the key cache ",
               k.str());
  const bool sparse = decode_uses_sparse(options, position);
  Tensor blocks;
  if (sparse) {
    check_kc("decode_attention", kc, k, options.sparse, position + 1);
    blocks = select_decode_blocks(q, kc, position, options.sparse);
  }
  const int max_blocks = sparse ? options.sparse.topk : 0;
  const int block_size = options.sparse.block_size;
  const int32_t* list = sparse ? blocks.data<int32_t>() : nullptr;
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  if (q.device().is_cuda()) {
    INFLLM_CHECK(q.dtype() == DType::bf16, "decode_attention: CUDA takes bf16, got ", q.str());
    Tensor workspace = scratch(
        attention::cuda::decode_attention_workspace_bytes(s, max_blocks, block_size, sparse),
        q.device());
    attention::cuda::decode_attention(s, bf16_bits(q), bf16_bits(k), bf16_bits(v), list, max_blocks,
                                      block_size, bf16_bits(out), workspace.data_ptr(),
                                      device_stream(q.device()));
  } else {
    visit_f32_f64(q.dtype(), "decode_attention", [&]<class T>() {
      attention::cpu::decode_attention<T>(s, q.data<T>(), k.data<T>(), v.data<T>(), list,
                                          max_blocks, block_size, out.data<T>());
    });
  }
  if (selected != nullptr) *selected = blocks;
  return out;
}

void append_compressed_keys(const Tensor& k, const Tensor& kc, int64_t begin, int64_t end,
                            const attention::SparseConfig& config) {
  attention::check_sparse_config("append_compressed_keys", config);
  INFLLM_CHECK(k.dim() == 3 && k.is_contiguous() && 0 <= begin && begin <= end && end <= k.size(0),
               "append_compressed_keys: positions [", begin, ", ", end,
               ") must lie in the contiguous cache ", k.str());
  check_kc("append_compressed_keys", kc, k, config, end);
  const attention::KernelRange range = attention::completed_kernels(config, int(begin), int(end));
  if (range.first == range.end) return;
  const int Hkv = int(k.size(1)), D = int(k.size(2));
  if (k.device().is_cuda()) {
    INFLLM_CHECK(k.dtype() == DType::bf16, "append_compressed_keys: CUDA takes bf16, got ",
                 k.str());
    attention::cuda::append_compressed_keys(config, Hkv, D, bf16_bits(k), range, bf16_bits(kc),
                                            device_stream(k.device()));
  } else {
    visit_f32_f64(k.dtype(), "append_compressed_keys", [&]<class T>() {
      attention::cpu::append_compressed_keys<T>(config, Hkv, D, k.data<T>(), range, kc.data<T>());
    });
  }
}

}  // namespace infllm
