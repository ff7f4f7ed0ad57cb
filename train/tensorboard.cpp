#include "train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace infllm::train {

namespace fs = std::filesystem;

namespace {

// crc_table[b] is the CRC of the single byte b, for the byte-at-a-time loop below.
constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? 0x82F63B78u : 0u);
    table[byte] = crc;
  }
  return table;
}
constexpr std::array<uint32_t, 256> crc_table = make_crc32c_table();

// Fixed-width little-endian bytes, as both TFRecord framing and protobuf fixed fields store them.
template <class Unsigned>
void append_little_endian(std::string& out, Unsigned value) {
  for (size_t i = 0; i < sizeof(Unsigned); ++i) out += char((value >> (8 * i)) & 0xFF);
}

void append_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out += char((value & 0x7F) | 0x80);
    value >>= 7;
  }
  out += char(value);
}

// Protobuf wire types.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void append_key(std::string& out, uint32_t field, WireType type) {
  append_varint(out, (field << 3) | type);
}

void append_bytes_field(std::string& out, uint32_t field, std::string_view bytes) {
  append_key(out, field, kLengthDelimited);
  append_varint(out, bytes.size());
  out += bytes;
}

void append_double_field(std::string& out, uint32_t field, double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  append_key(out, field, kFixed64);
  append_little_endian(out, bits);
}

void append_float_field(std::string& out, uint32_t field, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  append_key(out, field, kFixed32);
  append_little_endian(out, bits);
}

// Field numbers of tensorflow.Event, Summary, Summary.Value and SessionLog.
constexpr uint32_t kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5,
                   kEventSessionLog = 7;
constexpr uint32_t kSummaryValue = 1, kValueTag = 1, kValueSimpleValue = 2;
constexpr uint32_t kSessionLogStatus = 1, kSessionStart = 1;

std::string event_header(double wall_time, int64_t step) {
  std::string event;
  append_double_field(event, kEventWallTime, wall_time);
  append_key(event, kEventStep, kVarint);
  append_varint(event, uint64_t(step));  // int64: negative steps take ten bytes, as protobuf says
  return event;
}

double unix_seconds_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

// events.out.tfevents.<seconds>.<host>; TensorBoard reads a folder's event files in name order, so
// a second writer within the same second gets ".1", ".2", ... which sort after the first.
fs::path new_event_file_path(const std::string& run_dir) {
  std::string base =
      "events.out.tfevents." + std::to_string(int64_t(unix_seconds_now())) + "." + host_name();
  fs::path path = fs::path(run_dir) / base;
  for (int n = 1; fs::exists(path); ++n)
    path = fs::path(run_dir) / (base + "." + std::to_string(n));
  return path;
}

}  // namespace

uint32_t crc32c(std::string_view data, uint32_t crc) {
  crc = ~crc;
  for (unsigned char byte : data) crc = crc_table[(crc ^ byte) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(std::string_view data) {
  uint32_t crc = crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord(std::string_view data) {
  std::string length;
  append_little_endian(length, uint64_t(data.size()));
  std::string record = length;
  append_little_endian(record, masked_crc32c(length));
  record += data;
  append_little_endian(record, masked_crc32c(data));
  return record;
}

std::string file_version_event(double wall_time) {
  std::string event;
  append_double_field(event, kEventWallTime, wall_time);
  append_bytes_field(event, kEventFileVersion, "brain.Event:2");
  return event;
}

std::string session_start_event(double wall_time, int64_t step) {
  std::string session_log;
  append_key(session_log, kSessionLogStatus, kVarint);
  append_varint(session_log, kSessionStart);
  std::string event = event_header(wall_time, step);
  append_bytes_field(event, kEventSessionLog, session_log);
  return event;
}

std::string scalars_event(double wall_time, int64_t step,
                          const std::vector<std::pair<std::string, float>>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string summary_value;
    append_bytes_field(summary_value, kValueTag, tag);
    append_float_field(summary_value, kValueSimpleValue, value);
    append_bytes_field(summary, kSummaryValue, summary_value);
  }
  std::string event = event_header(wall_time, step);
  append_bytes_field(event, kEventSummary, summary);
  return event;
}

TensorBoardWriter::TensorBoardWriter(const std::string& run_dir, int64_t start_step) {
  std::error_code error;
  fs::create_directories(run_dir, error);
  path_ = new_event_file_path(run_dir).string();
  file_ = std::fopen(path_.c_str(), "wb");
  INFLLM_CHECK(file_ != nullptr, "tensorboard: cannot create ", path_, ": ", std::strerror(errno),
               " (is train.out_dir writable? log.tensorboard=false turns event files off)");
  double now = unix_seconds_now();
  write_record(file_version_event(now));
  write_record(session_start_event(now, start_step + 1));
}

TensorBoardWriter::~TensorBoardWriter() {
  std::fclose(file_);
}

void TensorBoardWriter::write(const MetricsLine& line) {
  std::vector<std::pair<std::string, float>> scalars;
  for (const MetricField& field : line.fields) {
    if (const auto* v = std::get_if<double>(&field.value))
      scalars.emplace_back(field.key, float(*v));
    if (const auto* v = std::get_if<float>(&field.value)) scalars.emplace_back(field.key, *v);
    if (const auto* v = std::get_if<int64_t>(&field.value))
      scalars.emplace_back(field.key, float(*v));
  }
  if (!scalars.empty()) write_record(scalars_event(unix_seconds_now(), line.step, scalars));
}

void TensorBoardWriter::write_record(std::string_view event) {
  std::string record = tfrecord(event);
  bool ok = std::fwrite(record.data(), 1, record.size(), file_) == record.size();
  ok = std::fflush(file_) == 0 && ok;
  INFLLM_CHECK(ok, "tensorboard: cannot write to ", path_, ": ", std::strerror(errno),
               " (disk full?)");
}

}  // namespace infllm::train
