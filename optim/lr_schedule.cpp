#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "core/error.h"

namespace infllm {
namespace {

int64_t wsd_decay_steps(const LrSchedule& s, int64_t total_steps) {
  return std::llround(s.decay_fraction * double(total_steps));
}

void in_unit_range(const ConfigCheck& check, std::string_view field, double value) {
  check.require(value >= 0 && value <= 1, {field}, shortest_double(value) + " is outside [0, 1]",
                "pick a value in that range");
}

}  // namespace

std::span<const EnumName<LrScheduleKind>> enum_names(LrScheduleKind) {
  static constexpr EnumName<LrScheduleKind> names[] = {{LrScheduleKind::cosine, "cosine"},
                                                       {LrScheduleKind::wsd, "wsd"},
                                                       {LrScheduleKind::constant, "constant"}};
  return names;
}

std::string_view to_string(LrScheduleKind kind) {
  return enum_to_string(kind);
}

void check_schedule(const LrSchedule& s, double peak_lr, int64_t total_steps,
                    const ConfigCheck& check) {
  check.require(std::isfinite(peak_lr) && peak_lr >= 0, {"peak_lr"},
                "must be finite and 0 or more, got " + shortest_double(peak_lr), "set ",
                check.key("peak_lr"), " to the peak learning rate, e.g. 0.0003");
  check.require(total_steps > 0, {"total_steps"},
                "must be positive, got " + std::to_string(total_steps), "set ",
                check.key("total_steps"), " to a value greater than 0");
  check.require(s.warmup_steps >= 0, {"warmup_steps"},
                "must be 0 or more, got " + std::to_string(s.warmup_steps), "set ",
                check.key("warmup_steps"), " to a value of 0 or more");
  in_unit_range(check, "min_lr_ratio", s.min_lr_ratio);
  in_unit_range(check, "decay_fraction", s.decay_fraction);
  check.require(s.warmup_steps <= total_steps, {"warmup_steps", "total_steps"},
                std::to_string(s.warmup_steps) + " is more than " + check.key("total_steps") +
                    " = " + std::to_string(total_steps),
                "lower ", check.key("warmup_steps"), " or raise ", check.key("total_steps"));
  if (s.kind == LrScheduleKind::wsd) {
    const int64_t decay = wsd_decay_steps(s, total_steps);
    check.require(s.warmup_steps + decay <= total_steps,
                  {"decay_fraction", "warmup_steps", "kind", "total_steps"},
                  "leaves no room: warmup_steps " + std::to_string(s.warmup_steps) + " + decay " +
                      std::to_string(decay) + " steps exceed " + check.key("total_steps") + " = " +
                      std::to_string(total_steps),
                  "lower ", check.key("warmup_steps"), " or ", check.key("decay_fraction"));
  }
}

double learning_rate(const LrSchedule& s, double lr, int64_t total_steps, int64_t step) {
  check_schedule(s, lr, total_steps, ConfigCheck("learning_rate"));
  INFLLM_CHECK(step >= 0, "learning_rate: step=", step, " must be >= 0");
  const double u = double(step + 1);
  const double warmup = double(s.warmup_steps);
  const double total = double(total_steps);
  const double lr_min = lr * s.min_lr_ratio;
  if (u <= warmup) return lr * u / warmup;
  switch (s.kind) {
    case LrScheduleKind::cosine: {
      const double progress = std::min(1.0, (u - warmup) / (total - warmup));
      return lr_min + (lr - lr_min) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    }
    case LrScheduleKind::wsd: {
      const double decay = double(wsd_decay_steps(s, total_steps));
      const double decay_start = total - decay;
      if (u <= decay_start) return lr;
      const double progress = std::min(1.0, (u - decay_start) / decay);
      return lr - (lr - lr_min) * progress;
    }
    case LrScheduleKind::constant:
      return lr;
  }
  fail("learning_rate: unknown schedule kind ", int(s.kind));
}

}  // namespace infllm
