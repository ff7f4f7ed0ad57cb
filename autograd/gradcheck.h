// Finite-difference gradient check in f64 on the CPU: compares the engine's gradient of
// sum(fn(inputs) * probe) (probe a fixed random tensor, so every output element matters) with
// central differences, element by element of every input that requires grad.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace infllm {

struct GradcheckResult {
  double max_error = 0;  // max |analytic - numeric| / max(1, |numeric|) over all elements
  std::string worst;     // where it happened, for the test's failure message
};

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, double eps = 1e-6, uint64_t seed = 7);

}  // namespace infllm
