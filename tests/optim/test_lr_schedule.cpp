// Learning-rate schedules against their closed forms at the key steps (first, warmup end,
// middle, last, past the end), and the shape between them: rising in warmup, never rising after.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "optim/lr_schedule.h"

namespace infllm {
namespace {

// A schedule with the run it is evaluated for: peak lr and length.
struct ScheduleSpec : LrSchedule {
  double lr = 0;
  int64_t total_steps = 0;
};

double learning_rate(const ScheduleSpec& s, int64_t step) {
  return infllm::learning_rate(s, s.lr, s.total_steps, step);
}

ScheduleSpec spec(LrScheduleKind kind) {
  ScheduleSpec s;
  s.kind = kind;
  s.lr = 6e-4;
  s.min_lr_ratio = 0.1;
  s.decay_fraction = 0.2;
  s.warmup_steps = 10;
  s.total_steps = 110;
  return s;
}

void expect_rel(double out, double ref, const char* what) {
  EXPECT_LT(std::abs(out - ref) / std::abs(ref), 1e-12) << what << ": " << out << " vs " << ref;
}

// Rises strictly through warmup, then never rises.
void expect_shape(const ScheduleSpec& s) {
  for (int64_t step = 1; step < s.warmup_steps; ++step)
    EXPECT_GT(learning_rate(s, step), learning_rate(s, step - 1)) << "warmup step " << step;
  for (int64_t step = std::max<int64_t>(s.warmup_steps, 1); step < s.total_steps + 5; ++step)
    EXPECT_LE(learning_rate(s, step), learning_rate(s, step - 1)) << "step " << step;
}

TEST(LrSchedule, WarmupIsLinearFromOneStepToPeak) {
  for (LrScheduleKind kind :
       {LrScheduleKind::cosine, LrScheduleKind::wsd, LrScheduleKind::constant}) {
    const ScheduleSpec s = spec(kind);
    expect_rel(learning_rate(s, 0), s.lr / 10, "first step");
    expect_rel(learning_rate(s, 4), s.lr * 5 / 10, "warmup middle");
    expect_rel(learning_rate(s, 9), s.lr, "warmup end");
  }
}

TEST(LrSchedule, Cosine) {
  const ScheduleSpec s = spec(LrScheduleKind::cosine);
  const double lr_min = s.lr * s.min_lr_ratio;
  const auto closed_form = [&](double updates_after_warmup) {
    return lr_min +
           (s.lr - lr_min) * 0.5 * (1 + std::cos(std::numbers::pi * updates_after_warmup / 100));
  };
  expect_rel(learning_rate(s, 10), closed_form(1), "first decay step");
  expect_rel(learning_rate(s, 37), closed_form(28), "step 37");
  expect_rel(learning_rate(s, 59), (s.lr + lr_min) / 2, "middle of the decay");
  expect_rel(learning_rate(s, 109), lr_min, "last step");
  expect_rel(learning_rate(s, 500), lr_min, "past the end");
  expect_shape(s);
}

TEST(LrSchedule, CosineWithoutWarmupStartsBelowPeak) {
  ScheduleSpec s = spec(LrScheduleKind::cosine);
  s.warmup_steps = 0;
  const double lr_min = s.lr * s.min_lr_ratio;
  expect_rel(learning_rate(s, 0),
             lr_min + (s.lr - lr_min) * 0.5 * (1 + std::cos(std::numbers::pi / 110)), "step 0");
  expect_rel(learning_rate(s, 109), lr_min, "last step");
  expect_shape(s);
}

TEST(LrSchedule, WarmupStableDecay) {
  // 110 steps, decay_fraction 0.2: the last 22 updates (89..110) decay.
  const ScheduleSpec s = spec(LrScheduleKind::wsd);
  const double lr_min = s.lr * s.min_lr_ratio;
  expect_rel(learning_rate(s, 10), s.lr, "stable start");
  expect_rel(learning_rate(s, 50), s.lr, "stable middle");
  expect_rel(learning_rate(s, 87), s.lr, "last stable step");
  expect_rel(learning_rate(s, 88), s.lr - (s.lr - lr_min) / 22, "first decay step");
  expect_rel(learning_rate(s, 98), s.lr - (s.lr - lr_min) * 11 / 22, "middle of the decay");
  expect_rel(learning_rate(s, 109), lr_min, "last step");
  expect_rel(learning_rate(s, 200), lr_min, "past the end");
  expect_shape(s);
}

TEST(LrSchedule, Constant) {
  const ScheduleSpec s = spec(LrScheduleKind::constant);
  expect_rel(learning_rate(s, 10), s.lr, "after warmup");
  expect_rel(learning_rate(s, 109), s.lr, "last step");
  expect_rel(learning_rate(s, 1000), s.lr, "past the end");
  expect_shape(s);
}

TEST(LrSchedule, RejectsImpossibleSpecs) {
  ScheduleSpec s = spec(LrScheduleKind::cosine);
  EXPECT_THROW(learning_rate(s, -1), Error);
  s.warmup_steps = 111;
  EXPECT_THROW(learning_rate(s, 0), Error);
  s = spec(LrScheduleKind::wsd);
  s.warmup_steps = 90;  // + 22 decay steps > 110
  EXPECT_THROW(learning_rate(s, 0), Error);
  s = spec(LrScheduleKind::cosine);
  s.min_lr_ratio = 1.5;
  EXPECT_THROW(learning_rate(s, 0), Error);
  s = spec(LrScheduleKind::cosine);
  s.total_steps = 0;
  s.warmup_steps = 0;
  EXPECT_THROW(learning_rate(s, 0), Error);
}

}  // namespace
}  // namespace infllm
