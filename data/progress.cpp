#include "data/progress.h"

#include <unistd.h>

#include <algorithm>

namespace infllm::data {

ByteProgress::ByteProgress(std::string label, int64_t total_bytes, std::FILE* out, bool interactive)
    : label_(std::move(label)),
      total_(total_bytes),
      out_(out),
      interactive_(interactive),
      start_(Clock::now()),
      last_print_(start_) {}

ByteProgress::ByteProgress(std::string label, int64_t total_bytes)
    : ByteProgress(std::move(label), total_bytes, stderr, ::isatty(STDERR_FILENO) == 1) {}

void ByteProgress::update(int64_t done_bytes) {
  done_ = done_bytes;
  const auto period = interactive_ ? std::chrono::milliseconds(100) : std::chrono::seconds(1);
  const auto now = Clock::now();
  if (now - last_print_ < period) return;
  last_print_ = now;
  print(false);
}

void ByteProgress::finish() {
  done_ = total_;
  print(true);
}

void ByteProgress::print(bool final_line) {
  constexpr double kMB = 1e6;
  constexpr int kBarWidth = 30;
  const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  const double fraction = total_ > 0 ? std::clamp(double(done_) / total_, 0.0, 1.0) : 1.0;
  const double rate = seconds > 0 ? done_ / seconds : 0.0;
  std::string tail;
  if (final_line) {
    tail = "took " + std::to_string(static_cast<int>(seconds + 0.5)) + " s\n";
  } else {
    const int eta = rate > 0 ? static_cast<int>((total_ - done_) / rate + 0.5) : 0;
    char eta_text[32];
    std::snprintf(eta_text, sizeof(eta_text), "ETA %d:%02d", eta / 60, eta % 60);
    tail = std::string(eta_text) + (interactive_ ? "   " : "\n");  // spaces erase a longer line
  }
  std::string bar;
  if (interactive_) {
    const int filled = static_cast<int>(fraction * kBarWidth);
    bar.append(1, '[').append(filled, '#').append(kBarWidth - filled, '.').append("] ");
  }
  std::fprintf(out_, "%s%s %s%5.1f%%  %.1f / %.1f MB  %.1f MB/s  %s", interactive_ ? "\r" : "",
               label_.c_str(), bar.c_str(), 100 * fraction, done_ / kMB, total_ / kMB, rate / kMB,
               tail.c_str());
  std::fflush(out_);
}

}  // namespace infllm::data
