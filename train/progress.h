// The progress line: on a terminal one live line on stderr, redrawn in place each step,
//   step 120/300 (40%) | loss 2.345 | lr 3.0e-3 | 45.2K tok/s | MFU 31% | mem 12.3/80 GB |
//   00:42 elapsed | ETA 01:03
// cut to the terminal's width; elsewhere (CI logs, a redirected stderr) the same text as a plain
// line every N steps. The formatting is pure functions, so tests pin it down.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

namespace infllm::train {

// What one progress line shows. Unknown values are NaN (or 0 for sizes and totals) and their
// part of the line is left out, except the loss ("loss nan" flags a non-finite step) and the ETA
// ("ETA --:--").
struct ProgressState {
  int64_t step = 0;
  int64_t total_steps = 0;  // 0 = unknown: no "/total (percent)"
  double loss = NAN;
  double lr = NAN;
  double tokens_per_s = NAN;
  double mfu = NAN;            // fraction of peak, 0.31 -> "MFU 31%"; <= 0 (no peak known): hidden
  double memory_gb = 0;        // <= 0 (CPU): hidden
  double memory_total_gb = 0;  // the device's capacity; <= 0: "mem 12.3 GB"
  double elapsed_s = NAN;
  double eta_s = NAN;
};

// "00:42", "59:59", "1:02:03", "3d 04:05:06"; "--:--" for negative or non-finite durations.
std::string format_duration(double seconds);
// Three significant digits with a K/M/G/T suffix: 950 -> "950", 45200 -> "45.2K", 1.234e6 ->
// "1.23M". Non-finite: "?".
std::string format_rate(double per_second);
// Short scientific notation: 0.003 -> "3.0e-3", 1.5e-4 -> "1.5e-4", 0 -> "0".
std::string format_scientific(double value);
// The line for `state`. When it is wider than `width` columns (width > 0), whole parts are
// dropped, least useful first (lr, MFU, mem, elapsed, tok/s, loss, ETA), and as a last resort the
// text is cut. width <= 0: no limit.
std::string format_progress_line(const ProgressState& state, int width);

// What the run did, for the line printed when it ends.
struct RunSummary {
  int64_t first_step = 0;  // the step this process started from (> 0 after a resume)
  int64_t last_step = 0;
  double final_loss = NAN;
  double final_val_loss = NAN;  // NaN: no validation
  double elapsed_s = 0;         // this process's training time
  double tokens = 0;            // tokens trained on by this process
  double peak_memory_gb = 0;    // <= 0: not shown
  std::string run_dir;
};
// "trained steps 1-300 in 12:34 | loss 2.345 | val loss 2.456 (ppl 11.7) | 12.3M tokens at
// 45.2K tok/s | peak mem 12.3 GB | run folder runs/tiny"
std::string format_summary(const RunSummary& summary);

// Smoothed seconds per step for the ETA: an exponential moving average that ignores the first
// `warmup_steps` steps (allocation, autotuning and data prefetch make them slow).
class StepTimeAverage {
 public:
  explicit StepTimeAverage(int warmup_steps = 3, double smoothing = 0.1)
      : warmup_steps_(warmup_steps), smoothing_(smoothing) {}
  void add(double step_seconds);
  // NaN until a step past the warm-up was seen.
  double seconds_per_step() const { return average_; }
  double eta_seconds(int64_t steps_left) const { return average_ * double(steps_left); }

 private:
  int warmup_steps_;
  double smoothing_;
  int seen_ = 0;
  double average_ = NAN;
};

// Shows ProgressStates on a stream (stderr by default): live on a terminal, otherwise one plain
// line every `plain_every` steps and at the last step.
class ProgressLine {
 public:
  explicit ProgressLine(std::FILE* stream = stderr, int64_t plain_every = 10);
  ~ProgressLine() { finish(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  bool is_terminal() const { return terminal_; }
  // Fills state.eta_s from the smoothed step time (when the caller left it NaN) and shows it.
  void update(ProgressState state, double step_seconds);
  // Erases the live line so other output (an eval result, a warning) starts on a clean line; the
  // next update draws it again.
  void clear();
  // Ends the live line with a newline so the terminal prompt starts below it.
  void finish();

 private:
  std::FILE* stream_;
  int64_t plain_every_;
  bool terminal_;
  bool line_shown_ = false;
  StepTimeAverage step_time_;
};

// The width of the terminal behind `stream`: the window size, else $COLUMNS, else 80.
int terminal_width(std::FILE* stream);

}  // namespace infllm::train
