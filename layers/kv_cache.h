// The keys and values a TransformerLM has computed for one sequence, kept for generation: a
// prompt fills it once (TransformerLM::prefill), then each new token reads it and adds its own
// row (TransformerLM::decode_step), so no position is computed twice.
//
// Per layer, preallocated for `capacity` positions on the model's device in its dtype:
//   k, v  [capacity, Hkv, D]   rotated keys and values of positions 0 .. length() - 1
//   kc    [num_kernels(sparse, capacity), Hkv, D]   InfLLM-V2's compressed keys (kernel i = mean
//         of k over tokens [i*kernel_stride, i*kernel_stride + kernel_size)), one more each time
//         a kernel's last token arrives; kept only when the model may take the sparse path.
#pragma once

#include <vector>

#include "layers/model_config.h"

namespace infllm {

class KvCache {
 public:
  struct Layer {
    Tensor k, v;  // [capacity, Hkv, D]
    Tensor kc;    // [num_kernels(capacity), Hkv, D]; undefined without compressed keys
  };
  // What the last decode step's attention read in one layer, kept for diagnostics (a test weighs
  // the decode's block choice against a full-sequence forward's): its query q [Hq, D] (RoPE
  // applied) and, on the sparse path, the block lists [Hkv, topk] it attended (undefined when
  // dense). Tensors the step made, on the cache's device; nothing is copied to keep them.
  struct DecodeRecord {
    Tensor q, blocks;
  };

  // Compressed keys are kept when `config`'s attention is the InfLLM-V2 variant in mode sparse or
  // auto; their SparseConfig is the one the model has now.
  KvCache(const ModelConfig& config, int64_t capacity, Device device, DType dtype);

  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }  // positions filled
  int64_t n_layers() const { return int64_t(layers_.size()); }
  const Layer& layer(int64_t index) const;
  bool has_compressed_keys() const { return compressed_; }
  const attention::SparseConfig& sparse_config() const { return sparse_; }

  // Stores layer `index`'s rotated k and v of the T tokens at positions length() .. length() + T
  // - 1 from the packed projection qkv [1, T, Hq + 2 Hkv, D], and the compressed keys they
  // complete. Every layer stores the same T tokens, then advance(T) moves length() past them.
  void store(int64_t index, const Tensor& qkv);
  void advance(int64_t tokens);

  // Layer `index`'s record of the last decode step (undefined tensors before the first).
  const DecodeRecord& last_decode(int64_t index) const;
  void record_decode(int64_t index, DecodeRecord record);

 private:
  int64_t Hq_, Hkv_, capacity_, length_ = 0;
  bool compressed_;
  attention::SparseConfig sparse_;
  std::vector<Layer> layers_;
  std::vector<DecodeRecord> decode_records_;  // one per layer
};

}  // namespace infllm
