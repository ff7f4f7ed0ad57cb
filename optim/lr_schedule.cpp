#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace infllm {
namespace {

int64_t wsd_decay_steps(const ScheduleSpec& spec) {
  return std::llround(spec.decay_fraction * double(spec.total_steps));
}

}  // namespace

void check_schedule(const ScheduleSpec& spec) {
  INFLLM_CHECK(std::isfinite(spec.lr) && spec.lr >= 0, "learning_rate: lr=", spec.lr,
               " must be finite and >= 0 (optim.lr)");
  INFLLM_CHECK(spec.min_lr_ratio >= 0 && spec.min_lr_ratio <= 1,
               "learning_rate: min_lr_ratio=", spec.min_lr_ratio,
               " must be in [0, 1] (schedule.min_lr_ratio)");
  INFLLM_CHECK(spec.decay_fraction >= 0 && spec.decay_fraction <= 1,
               "learning_rate: decay_fraction=", spec.decay_fraction,
               " must be in [0, 1] (schedule.decay_fraction)");
  INFLLM_CHECK(spec.total_steps > 0, "learning_rate: total_steps=", spec.total_steps,
               " must be positive (train.steps)");
  INFLLM_CHECK(spec.warmup_steps >= 0 && spec.warmup_steps <= spec.total_steps,
               "learning_rate: warmup_steps=", spec.warmup_steps,
               " must be in [0, total_steps=", spec.total_steps,
               "]; lower schedule.warmup_steps or raise train.steps");
  if (spec.kind == LrScheduleKind::wsd) {
    INFLLM_CHECK(spec.warmup_steps + wsd_decay_steps(spec) <= spec.total_steps,
                 "learning_rate: wsd warmup_steps=", spec.warmup_steps, " + decay steps ",
                 wsd_decay_steps(spec), " (decay_fraction=", spec.decay_fraction,
                 ") exceed total_steps=", spec.total_steps,
                 "; lower schedule.warmup_steps or schedule.decay_fraction");
  }
}

double learning_rate(const ScheduleSpec& spec, int64_t step) {
  check_schedule(spec);
  INFLLM_CHECK(step >= 0, "learning_rate: step=", step, " must be >= 0");
  const double u = double(step + 1);
  const double warmup = double(spec.warmup_steps);
  const double total = double(spec.total_steps);
  const double lr_min = spec.lr * spec.min_lr_ratio;
  if (u <= warmup) return spec.lr * u / warmup;
  switch (spec.kind) {
    case LrScheduleKind::cosine: {
      const double progress = std::min(1.0, (u - warmup) / (total - warmup));
      return lr_min + (spec.lr - lr_min) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    }
    case LrScheduleKind::wsd: {
      const double decay = double(wsd_decay_steps(spec));
      const double decay_start = total - decay;
      if (u <= decay_start) return spec.lr;
      const double progress = std::min(1.0, (u - decay_start) / decay);
      return spec.lr - (spec.lr - lr_min) * progress;
    }
    case LrScheduleKind::constant:
      return spec.lr;
  }
  fail("learning_rate: unknown schedule kind ", int(spec.kind));
}

}  // namespace infllm
