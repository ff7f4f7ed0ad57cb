// A parameter as the optimizers and data parallelism see it: its dotted name
// ("blocks.3.attention.wqkv.weight", the name checkpoints use) and the leaf tensor it lives in.
// layers/ produces them (Module::named_parameters()); optim/ and distributed/ consume them, so
// the type sits on the floor below all three.
#pragma once

#include <string>
#include <utility>

#include "core/tensor.h"

namespace infllm {

using NamedParameter = std::pair<std::string, Tensor*>;

}  // namespace infllm
