// Learning-rate schedules: the lr of each optimizer step, a pure function of the step index.
//
// `step` is the 0-based index of the update about to be taken (AdamW::steps_taken() before
// the call); u = step + 1 counts updates including this one. With lr the peak lr (optim.lr),
// W = warmup_steps, N = total_steps (train.steps), lr_min = lr * min_lr_ratio:
//   warmup (every kind), u <= W:  lr * u / W          (the first update is not at lr 0)
//   cosine,   u > W:              lr_min + (lr - lr_min) * (1 + cos(pi * (u - W) / (N - W))) / 2
//   wsd,      W < u <= N - D:     lr, with D = round(decay_fraction * N) decay steps
//             u > N - D:          lr - (lr - lr_min) * (u - (N - D)) / D
//   constant, u > W:              lr
// so cosine and wsd reach lr_min at the last step (u = N) and stay there past it.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "core/config_check.h"
#include "core/enum_names.h"

namespace infllm {

enum class LrScheduleKind { cosine, wsd, constant };

// "cosine", "wsd", "constant" (recipe key schedule.kind); parse with from_string<LrScheduleKind>.
std::span<const EnumName<LrScheduleKind>> enum_names(LrScheduleKind);
std::string_view to_string(LrScheduleKind kind);

// The schedule's shape, the recipe's `schedule:` section. The peak lr and the run's length come
// with each call (optim.lr and train.steps in a recipe).
struct LrSchedule {
  LrScheduleKind kind = LrScheduleKind::cosine;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;    // final lr = peak lr * min_lr_ratio (cosine, wsd)
  double decay_fraction = 0.2;  // wsd: share of total_steps spent decaying at the end
  bool operator==(const LrSchedule&) const = default;
};

// The one validator of a schedule: throws infllm::Error naming the field in the words of `check`
// (fields "kind", "warmup_steps", "min_lr_ratio", "decay_fraction", "peak_lr", "total_steps"),
// e.g. warmup longer than the run, or warmup + wsd decay longer than the run.
void check_schedule(const LrSchedule& schedule, double peak_lr, int64_t total_steps,
                    const ConfigCheck& check);
// The lr of update `step` (>= 0) of a run of `total_steps` updates peaking at `peak_lr`; checks
// the schedule.
double learning_rate(const LrSchedule& schedule, double peak_lr, int64_t total_steps, int64_t step);

}  // namespace infllm
