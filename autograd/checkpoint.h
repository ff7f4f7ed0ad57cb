// Activation checkpointing: run `fn` without recording (so none of its intermediates are kept),
// and recompute it with recording during backward to get the gradients of its inputs and of
// any parameters it uses. Gradients equal the un-checkpointed ones; memory drops to the inputs.
// fn must be deterministic (same outputs on the recompute), and at least one input must
// require grad (as a transformer block's input does), else nothing is recorded.
#pragma once

#include <functional>
#include <vector>

#include "core/tensor.h"

namespace infllm {

using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs);

}  // namespace infllm
