#include "train/evaluate.h"

#include <cmath>
#include <cstring>

#include "autograd/node.h"
#include "data/eval_windows.h"

namespace infllm::train {

EvalResult evaluate(const TransformerLM& model, const std::string& path, int64_t T, int64_t B,
                    int64_t max_windows, Device device) {
  autograd::NoGradGuard no_grad;
  data::EvalOptions options;
  options.T = T;
  options.B = B;
  options.max_windows = max_windows;
  data::EvalWindows windows(path, options);
  INFLLM_CHECK(windows.num_windows() > 0, "evaluation data ", path,
               " holds fewer than T + 1 = ", T + 1,
               " tokens (use a shorter data.seq_len or a larger file)");
  double weighted = 0;
  EvalResult result;
  for (int64_t i = 0; i < windows.num_batches(); ++i) {
    data::EvalBatch batch = windows.batch(i);
    if (batch.rows == 0) continue;
    Tensor inputs = Tensor::from_vector(batch.inputs, {batch.rows, T}, device);
    Tensor targets = Tensor::from_vector(batch.targets, {batch.rows, T}, device);
    int64_t n = batch.rows * T;
    weighted += model.loss(inputs, targets, n).item() * double(n);
    result.tokens += n;
  }
  result.loss = weighted / double(result.tokens);
  result.perplexity = std::exp(result.loss);
  return result;
}

}  // namespace infllm::train
