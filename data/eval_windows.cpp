#include "data/eval_windows.h"

#include <algorithm>

#include "core/error.h"

namespace infllm::data {

EvalWindows::EvalWindows(const std::string& path, EvalOptions options)
    : file_(path), options_(options) {
  INFLLM_CHECK(options_.T >= 1 && options_.B >= 1 && options_.max_windows >= 1,
               "eval windows: T = ", options_.T, ", B = ", options_.B,
               " and max_windows = ", options_.max_windows, " must all be at least 1");
  INFLLM_CHECK(options_.world >= 1 && 0 <= options_.rank && options_.rank < options_.world,
               "eval windows: rank ", options_.rank, " is outside world size ", options_.world);
  num_windows_ = std::min(options_.max_windows, (file_.num_tokens() - 1) / options_.T);
  INFLLM_CHECK(num_windows_ >= 1, "eval windows: '", path, "' has ", file_.num_tokens(),
               " tokens, fewer than the ", options_.T + 1, " that one sequence of T = ", options_.T,
               " needs; lower the sequence length or hold out more validation text");
}

int64_t EvalWindows::num_batches() const {
  const int64_t global_batch = options_.world * options_.B;
  return (num_windows_ + global_batch - 1) / global_batch;
}

EvalBatch EvalWindows::batch(int64_t index) const {
  INFLLM_CHECK(0 <= index && index < num_batches(), "eval windows: batch ", index, " outside [0, ",
               num_batches(), ")");
  const int64_t T = options_.T;
  const int64_t first = (index * options_.world + options_.rank) * options_.B;
  EvalBatch batch;
  batch.T = T;
  batch.rows = std::clamp<int64_t>(num_windows_ - first, 0, options_.B);
  batch.inputs.resize(batch.rows * T);
  batch.targets.resize(batch.rows * T);
  std::vector<uint32_t> window(T + 1);
  for (int64_t b = 0; b < batch.rows; ++b) {
    file_.read((first + b) * T, (first + b) * T + T + 1, window.data());
    for (int64_t t = 0; t < T; ++t) {
      batch.inputs[b * T + t] = static_cast<int32_t>(window[t]);
      batch.targets[b * T + t] = static_cast<int32_t>(window[t + 1]);
    }
  }
  return batch;
}

}  // namespace infllm::data
