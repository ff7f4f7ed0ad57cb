// Turning a recipe into the pieces of a run: the device and dtype, the model's shape, the
// optimizer's and schedule's settings. Shared by train, eval, generate and bench.
#pragma once

#include <memory>

#include "layers/transformer.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "train/recipe.h"

namespace infllm::train {

Device choose_device(const Recipe& recipe, int local_rank = 0);
// bf16 on a GPU (an error if the recipe asks for f32 there), f32 on the CPU.
DType compute_dtype(const Recipe& recipe, Device device);
infllm::ModelConfig model_config(const Recipe& recipe);
AdamWOptions adamw_options(const Recipe& recipe);
ScheduleSpec schedule_spec(const Recipe& recipe);
attention::AttentionMode attention_mode(AttentionMode mode);

// Peak dense bf16 tensor throughput of `device` for MFU (0 when unknown, e.g. the CPU).
double peak_flops(Device device);

}  // namespace infllm::train
