// metrics.jsonl: one JSON object per logged step, appended and flushed line by line, so a crash
// loses at most the line being written and `tail -f` / plotting tools see progress live.
//
// A line always starts with "step", then the fields in the order they were set:
//   {"step":120,"loss":2.345,"lr":0.003,"grad_norm":0.81,"tokens_per_s":45200,...}
// Numbers are written in their shortest exact form; NaN and infinities become null (JSON has no
// spelling for them). Strings (e.g. "attention":"sparse") are escaped.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace infllm::train {

// A float32 value is written with float precision ("2.345", not "2.3450000286102295").
using MetricValue = std::variant<double, float, int64_t, std::string>;

struct MetricField {
  std::string key;
  MetricValue value;
};

// One line of metrics.jsonl. Setting a key twice replaces its value in place.
struct MetricsLine {
  explicit MetricsLine(int64_t step = 0) : step(step) {}

  int64_t step;
  std::vector<MetricField> fields;

  MetricsLine& set(std::string_view key, MetricValue value);
  const MetricValue* find(std::string_view key) const;
};

// JSON spelling of one number: shortest round-trip form, "null" for NaN and +-inf.
std::string json_number(double value);
std::string json_number(float value);
// A quoted JSON string with ", \ and control characters escaped.
std::string json_string(std::string_view text);
// The whole line, without the trailing newline.
std::string to_json_line(const MetricsLine& line);

// Parses one line written by to_json_line (a flat JSON object: numbers, strings, null, true,
// false; "step" must be an integer). Numbers come back as double (integers without fraction or
// exponent as int64_t), null as NaN. Returns nullopt for anything else (e.g. a half-written line).
std::optional<MetricsLine> parse_json_line(std::string_view text);

// Appends to <run_dir>/metrics.jsonl (created with the folder when missing; never truncated).
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& run_dir);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // Writes one line and flushes it to the operating system.
  void write(const MetricsLine& line);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// After resuming from the checkpoint of step `last_step`: removes the lines with step > last_step
// (written after that checkpoint, before the run stopped) so the curves have one value per step.
// Also removes an unterminated last line (a crash mid-write). Lines that do not parse are kept.
// Rewrites through a temporary file and a rename, so the file is never half-written. Returns the
// number of lines removed; a missing file removes nothing.
int64_t drop_metrics_after(const std::string& metrics_path, int64_t last_step);

}  // namespace infllm::train
