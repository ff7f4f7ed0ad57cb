#include "layers/kv_cache.h"

#include "attention/cached_attention.h"
#include "core/ops.h"

namespace infllm {

KvCache::KvCache(const ModelConfig& model, int64_t capacity, Device device, DType dtype)
    : capacity_(capacity) {
  const ModelConfig config = with_derived_sizes(model);
  const AttentionOptions& options = config.attention;
  INFLLM_CHECK(capacity > 0 && capacity < (int64_t(1) << 31), "KvCache: capacity ", capacity,
               " must be in [1, 2^31): the prompt plus the tokens to generate");
  Hq_ = config.n_heads;
  Hkv_ = config.n_kv_heads;
  compressed_ = options.variant == attention::AttentionVariant::infllm_v2 &&
                options.mode != attention::AttentionMode::dense;
  sparse_ = options.sparse;
  if (compressed_) attention::check_sparse_config("KvCache", sparse_);
  const int64_t D = config.head_dim;
  const int64_t n_kernels = compressed_ ? attention::num_kernels(sparse_, int(capacity)) : 0;
  for (int64_t i = 0; i < config.n_layers; ++i) {
    Layer layer{Tensor::empty({capacity, Hkv_, D}, dtype, device),
                Tensor::empty({capacity, Hkv_, D}, dtype, device), Tensor()};
    if (compressed_) layer.kc = Tensor::empty({n_kernels, Hkv_, D}, dtype, device);
    layers_.push_back(std::move(layer));
  }
  decode_records_.resize(layers_.size());
}

const KvCache::Layer& KvCache::layer(int64_t index) const {
  INFLLM_CHECK(index >= 0 && index < n_layers(), "KvCache: layer ", index, " of ", n_layers());
  return layers_[size_t(index)];
}

void KvCache::store(int64_t index, const Tensor& qkv) {
  const Layer& cache = layer(index);
  INFLLM_CHECK(qkv.dim() == 4 && qkv.size(0) == 1 && qkv.size(2) == Hq_ + 2 * Hkv_ &&
                   qkv.size(3) == cache.k.size(2) && qkv.dtype() == cache.k.dtype() &&
                   qkv.device() == cache.k.device(),
               "KvCache::store: expected one sequence's packed qkv [1, T, ", Hq_ + 2 * Hkv_, ", ",
               cache.k.size(2), "] ", dtype_name(cache.k.dtype()), " on ", cache.k.device().str(),
               ", got ", qkv.str());
  const int64_t T = qkv.size(1), end = length_ + T;
  INFLLM_CHECK(end <= capacity_, "KvCache::store: positions up to ", end,
               " do not fit the cache's capacity of ", capacity_,
               " (create it for the prompt plus every token to generate)");
  Tensor rows = qkv.select(0, 0);  // [T, Hq + 2 Hkv, D]
  Tensor k_dst = cache.k.slice(0, length_, end), v_dst = cache.v.slice(0, length_, end);
  copy_into(rows.slice(1, Hq_, Hq_ + Hkv_), k_dst);
  copy_into(rows.slice(1, Hq_ + Hkv_, Hq_ + 2 * Hkv_), v_dst);
  if (compressed_) append_compressed_keys(cache.k, cache.kc, length_, end, sparse_);
}

const KvCache::DecodeRecord& KvCache::last_decode(int64_t index) const {
  layer(index);  // checks the index
  return decode_records_[size_t(index)];
}

void KvCache::record_decode(int64_t index, DecodeRecord record) {
  layer(index);
  decode_records_[size_t(index)] = std::move(record);
}

void KvCache::advance(int64_t tokens) {
  INFLLM_CHECK(tokens >= 0 && length_ + tokens <= capacity_, "KvCache::advance: ", tokens,
               " tokens past ", length_, " exceed the capacity of ", capacity_);
  length_ += tokens;
}

}  // namespace infllm
