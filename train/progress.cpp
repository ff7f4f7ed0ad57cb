#include "train/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace infllm::train {

namespace {

template <class... Args>
std::string format(const char* pattern, Args... args) {
  char buffer[256];
  std::snprintf(buffer, sizeof(buffer), pattern, args...);
  return buffer;
}

// One " | "-separated part of the progress line; parts with a lower drop_order are dropped first
// when the line is too wide.
struct LinePart {
  std::string text;
  int drop_order;
};

constexpr int kNeverDropped = 100;

std::string join(const std::vector<LinePart>& parts) {
  std::string line;
  for (const LinePart& part : parts) line += (line.empty() ? "" : " | ") + part.text;
  return line;
}

// Four significant digits, trailing zeros kept so the width does not jump: "3.000", "10.83".
std::string format_loss(double loss) {
  if (!std::isfinite(loss)) return std::isnan(loss) ? "nan" : "inf";
  std::string text = format("%#.4g", loss);
  return text.back() == '.' ? text.substr(0, text.size() - 1) : text;
}

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  int64_t total = int64_t(seconds);
  int64_t days = total / 86400, hours = total / 3600 % 24, minutes = total / 60 % 60;
  int64_t secs = total % 60;
  if (days > 0)
    return format("%lldd %02lld:%02lld:%02lld", (long long)days, (long long)hours,
                  (long long)minutes, (long long)secs);
  if (hours > 0)
    return format("%lld:%02lld:%02lld", (long long)hours, (long long)minutes, (long long)secs);
  return format("%02lld:%02lld", (long long)minutes, (long long)secs);
}

std::string format_rate(double per_second) {
  if (!std::isfinite(per_second)) return "?";
  static const char* const suffixes[] = {"", "K", "M", "G", "T"};
  int suffix = 0;
  // 999.5 and up would print as "1e+03" with three digits: move to the next suffix instead.
  while (std::fabs(per_second) >= 999.5 && suffix < 4) {
    per_second /= 1000;
    ++suffix;
  }
  return format("%.3g%s", per_second, suffixes[suffix]);
}

std::string format_scientific(double value) {
  if (value == 0) return "0";
  if (!std::isfinite(value)) return std::isnan(value) ? "nan" : "inf";
  std::string text = format("%.1e", value);  // "3.0e-03": drop the exponent's sign and zeros
  size_t e = text.find('e');
  return text.substr(0, e) + "e" + std::to_string(std::atoi(text.c_str() + e + 1));
}

std::string format_progress_line(const ProgressState& s, int width) {
  std::vector<LinePart> parts;
  if (s.total_steps > 0) {
    int64_t percent = 100 * s.step / s.total_steps;
    parts.push_back({format("step %lld/%lld (%lld%%)", (long long)s.step, (long long)s.total_steps,
                            (long long)percent),
                     kNeverDropped});
  } else {
    parts.push_back({format("step %lld", (long long)s.step), kNeverDropped});
  }
  parts.push_back({"loss " + format_loss(s.loss), 5});
  if (!std::isnan(s.lr)) parts.push_back({"lr " + format_scientific(s.lr), 0});
  if (std::isfinite(s.tokens_per_s)) parts.push_back({format_rate(s.tokens_per_s) + " tok/s", 4});
  if (s.mfu > 0 && std::isfinite(s.mfu)) parts.push_back({format("MFU %.0f%%", 100 * s.mfu), 1});
  if (s.memory_gb > 0) {
    parts.push_back({s.memory_total_gb > 0
                         ? format("mem %.1f/%.0f GB", s.memory_gb, s.memory_total_gb)
                         : format("mem %.1f GB", s.memory_gb),
                     2});
  }
  if (std::isfinite(s.elapsed_s)) parts.push_back({format_duration(s.elapsed_s) + " elapsed", 3});
  parts.push_back({"ETA " + format_duration(s.eta_s), 6});

  if (width <= 0) return join(parts);
  while (int(join(parts).size()) > width) {
    auto least_useful = std::min_element(
        parts.begin(), parts.end(), [](auto& a, auto& b) { return a.drop_order < b.drop_order; });
    if (least_useful->drop_order == kNeverDropped) break;
    parts.erase(least_useful);
  }
  return join(parts).substr(0, size_t(width));
}

std::string format_summary(const RunSummary& r) {
  std::vector<LinePart> parts;
  parts.push_back({format("trained steps %lld-%lld in ", (long long)(r.first_step + 1),
                          (long long)r.last_step) +
                       format_duration(r.elapsed_s),
                   0});
  parts.push_back({"loss " + format_loss(r.final_loss), 0});
  if (!std::isnan(r.final_val_loss)) {
    parts.push_back({"val loss " + format_loss(r.final_val_loss) + " (ppl " +
                         format_loss(std::exp(r.final_val_loss)) + ")",
                     0});
  }
  if (r.tokens > 0 && r.elapsed_s > 0) {
    parts.push_back(
        {format_rate(r.tokens) + " tokens at " + format_rate(r.tokens / r.elapsed_s) + " tok/s",
         0});
  }
  if (r.peak_memory_gb > 0) parts.push_back({format("peak mem %.1f GB", r.peak_memory_gb), 0});
  if (!r.run_dir.empty()) parts.push_back({"run folder " + r.run_dir, 0});
  return join(parts);
}

void StepTimeAverage::add(double step_seconds) {
  if (++seen_ <= warmup_steps_ || !std::isfinite(step_seconds)) return;
  average_ =
      std::isnan(average_) ? step_seconds : average_ + smoothing_ * (step_seconds - average_);
}

int terminal_width(std::FILE* stream) {
  winsize size{};
  if (ioctl(fileno(stream), TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  const char* columns = std::getenv("COLUMNS");
  if (columns != nullptr && std::atoi(columns) > 0) return std::atoi(columns);
  return 80;
}

// A terminal that cannot move the cursor ("dumb", e.g. an editor's output pane) gets plain lines.
static bool is_live_terminal(std::FILE* stream) {
  const char* term = std::getenv("TERM");
  return isatty(fileno(stream)) && !(term != nullptr && std::strcmp(term, "dumb") == 0);
}

ProgressLine::ProgressLine(std::FILE* stream, int64_t plain_every)
    : stream_(stream),
      plain_every_(std::max<int64_t>(plain_every, 1)),
      terminal_(is_live_terminal(stream)) {}

void ProgressLine::update(ProgressState state, double step_seconds) {
  step_time_.add(step_seconds);
  if (std::isnan(state.eta_s) && state.total_steps > 0) {
    state.eta_s = step_time_.eta_seconds(state.total_steps - state.step);
  }
  if (terminal_) {
    // Clear, then write: a line exactly as wide as the terminal leaves the cursor in the last
    // column, where erasing afterwards would eat the last character. One column stays free so
    // the terminal never wraps.
    std::string line = format_progress_line(state, terminal_width(stream_) - 1);
    std::fprintf(stream_, "\r\x1b[K%s", line.c_str());
    line_shown_ = true;
  } else if (state.step % plain_every_ == 0 || state.step == state.total_steps) {
    std::fprintf(stream_, "%s\n", format_progress_line(state, 0).c_str());
  }
  std::fflush(stream_);
}

void ProgressLine::clear() {
  if (!line_shown_) return;
  std::fputs("\r\x1b[K", stream_);
  std::fflush(stream_);
  line_shown_ = false;
}

void ProgressLine::finish() {
  if (!line_shown_) return;
  std::fputc('\n', stream_);
  std::fflush(stream_);
  line_shown_ = false;
}

}  // namespace infllm::train
