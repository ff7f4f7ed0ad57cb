// Validation loss of a model on the fixed evaluation windows of a token file.
#pragma once

#include <string>

#include "layers/transformer.h"

namespace infllm::train {

struct EvalResult {
  double loss = 0;        // mean next-token cross-entropy (nats)
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;
};

// Scores up to `max_windows` windows of `T` tokens, B at a time, without recording a graph.
EvalResult evaluate(const TransformerLM& model, const std::string& path, int64_t T, int64_t B,
                    int64_t max_windows, Device device);

}  // namespace infllm::train
