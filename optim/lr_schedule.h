// Learning-rate schedules: the lr of each optimizer step, a pure function of the step index.
//
// `step` is the 0-based index of the update about to be taken (AdamW::steps_taken() before
// the call); u = step + 1 counts updates including this one. With W = warmup_steps,
// N = total_steps, lr_min = lr * min_lr_ratio:
//   warmup (every kind), u <= W:  lr * u / W          (the first update is not at lr 0)
//   cosine,   u > W:              lr_min + (lr - lr_min) * (1 + cos(pi * (u - W) / (N - W))) / 2
//   wsd,      W < u <= N - D:     lr, with D = round(decay_fraction * N) decay steps
//             u > N - D:          lr - (lr - lr_min) * (u - (N - D)) / D
//   constant, u > W:              lr
// so cosine and wsd reach lr_min at the last step (u = N) and stay there past it.
// The trainer fills ScheduleSpec from train/recipe.h's OptimConfig and ScheduleConfig.
#pragma once

#include <cstdint>

namespace infllm {

// The same kinds, in the same order, as train::ScheduleKind.
enum class LrScheduleKind { cosine, wsd, constant };

struct ScheduleSpec {
  LrScheduleKind kind = LrScheduleKind::cosine;
  double lr = 3e-4;             // peak lr (optim.lr)
  double min_lr_ratio = 0.1;    // final lr = lr * min_lr_ratio (cosine, wsd)
  double decay_fraction = 0.2;  // wsd: share of total_steps spent decaying at the end
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // train.steps
};

// Throws infllm::Error naming the field when the spec is impossible (e.g. warmup longer than
// the run, or warmup + wsd decay longer than the run).
void check_schedule(const ScheduleSpec& spec);
// The lr of update `step` (>= 0); checks the spec.
double learning_rate(const ScheduleSpec& spec, int64_t step);

}  // namespace infllm
