// Turning a recipe into the pieces of a run that the recipe does not hold as library structs:
// the device and the compute dtype. (The model's shape, the optimizer's and the schedule's
// settings are recipe.model, recipe.optim and recipe.schedule themselves.) Shared by train,
// eval, generate and bench.
#pragma once

#include "core/device.h"
#include "core/dtype.h"
#include "train/recipe.h"

namespace infllm::train {

Device choose_device(const Recipe& recipe, int local_rank = 0);
// bf16 on a GPU (an error if the recipe asks for f32 there), f32 on the CPU.
DType compute_dtype(const Recipe& recipe, Device device);
// The lr of update `step`: recipe.schedule peaking at optim.lr over train.steps updates.
double learning_rate(const Recipe& recipe, int64_t step);

// Peak dense bf16 tensor throughput of `device` for MFU (0 when unknown, e.g. the CPU).
double peak_flops(Device device);

}  // namespace infllm::train
