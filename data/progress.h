// A progress report for long jobs measured in bytes: a redrawn bar on a terminal, one plain
// line per second otherwise (logs, CI), so neither floods the output.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace infllm::data {

class ByteProgress {
 public:
  // interactive: redraw one line with '\r'; otherwise print a new line each second.
  ByteProgress(std::string label, int64_t total_bytes, std::FILE* out, bool interactive);
  // For stderr, interactive exactly when stderr is a terminal.
  ByteProgress(std::string label, int64_t total_bytes);

  void update(int64_t done_bytes);  // cheap to call often: it prints only when due
  void finish();                    // the final line, always printed

 private:
  void print(bool final_line);

  using Clock = std::chrono::steady_clock;
  std::string label_;
  int64_t total_ = 0;
  int64_t done_ = 0;
  std::FILE* out_;
  bool interactive_;
  Clock::time_point start_;
  Clock::time_point last_print_;
};

}  // namespace infllm::data
