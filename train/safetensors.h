// Hugging Face safetensors files (https://huggingface.co/docs/safetensors):
//
//   8 bytes        N, the header length, unsigned little-endian
//   N bytes        a JSON object: "__metadata__" (string -> string, optional) and, per tensor,
//                  {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, offsets
//                  relative to the byte after the header
//   the rest       the tensors' little-endian bytes
//
// Read: F32, BF16 and F16 (each turned into an f32 tensor on the CPU: the form our master
// weights take). Written: F32 or BF16. Every malformed file is an infllm::Error that names the
// file and what is wrong with it, so a truncated download is not mistaken for a model.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace infllm::train {

struct Safetensors {
  std::vector<std::pair<std::string, Tensor>> tensors;  // by name; f32, CPU, contiguous
  std::map<std::string, std::string> dtypes;            // name -> the stored dtype ("BF16", ...)
  std::map<std::string, std::string> metadata;          // __metadata__
};

// Reads one file. The header is checked in full before any tensor is read.
Safetensors read_safetensors(const std::string& path);

// Writes `tensors` (any device, any floating dtype) as `dtype` (f32 or bf16) with `metadata`,
// atomically: a temp file beside `path`, renamed over it once complete. Names must be distinct.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors, DType dtype,
                       const std::map<std::string, std::string>& metadata = {});

// A model folder's weights: model.safetensors, or the shards that
// model.safetensors.index.json's weight_map names (each tensor in exactly the shard it names).
Safetensors read_safetensors_folder(const std::string& dir);

}  // namespace infllm::train
