// Fixed validation data: the first K windows of a token file, in order (window k reads tokens
// [k*T, k*T + T + 1)), so every evaluation of every run scores the same tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/token_file.h"

namespace infllm::data {

struct EvalOptions {
  int64_t T = 1024;          // tokens per sequence
  int64_t B = 1;             // sequences per batch on this rank
  int64_t max_windows = 64;  // K: evaluate at most this many windows (fewer if the file is short)
  int rank = 0;
  int world = 1;
};

struct EvalBatch {
  int64_t rows = 0;  // 0..B: the last batches of a rank may be partial or empty
  int64_t T = 0;
  std::vector<int32_t> inputs;   // [rows, T]
  std::vector<int32_t> targets;  // [rows, T]
};

class EvalWindows {
 public:
  EvalWindows(const std::string& path, EvalOptions options);

  int64_t num_windows() const { return num_windows_; }  // K over all ranks
  // The same on every rank, so collective ops in an evaluation loop stay matched; weigh each
  // batch's loss by its token count (rows * T) since some are partial.
  int64_t num_batches() const;
  // Batch `index` of this rank: windows (index * world + rank) * B + b that are < K.
  EvalBatch batch(int64_t index) const;

 private:
  TokenFile file_;
  EvalOptions options_;
  int64_t num_windows_ = 0;
};

}  // namespace infllm::data
