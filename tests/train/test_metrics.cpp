// Run monitoring files: metrics.jsonl lines (JSON spelling, parse-back, resume truncation),
// TensorBoard event files (CRC32C test vectors, TFRecord framing and Event protobufs re-read by an
// independent decoder here; TensorBoard's own reader through scripts/check-tensorboard when it is
// installed) and scripts/plot-runs when matplotlib is installed. The progress line is tested in
// test_progress.cpp.
// Runs from the repository root (ctest sets the working directory).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "core/error.h"
#include "train/metrics_log.h"
#include "train/tensorboard.h"

namespace infllm::train {
namespace {
namespace fs = std::filesystem;

// A fresh folder per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("infllm_metrics_" + std::to_string(getpid()) + "_" + test->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string str() const { return path_.string(); }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

std::vector<std::string> read_lines(const fs::path& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool python_has(const std::string& module) {
  return std::system(("python3 -c 'import " + module + "' >/dev/null 2>&1").c_str()) == 0;
}

// ---------------------------------------------------------------------------------------------
// metrics.jsonl

TEST(MetricsJson, WritesNumbersStringsAndNullExactly) {
  MetricsLine line;
  line.step = 120;
  line.set("loss", 2.345f)
      .set("lr", 0.003)
      .set("tokens", int64_t{491520})
      .set("grad_norm", std::nan(""))
      .set("mfu", std::numeric_limits<double>::infinity())
      .set("memory_gb", -std::numeric_limits<float>::infinity())
      .set("attention", std::string("sparse"))
      .set("note", std::string("say \"hi\"\\\n\x01"));
  EXPECT_EQ(to_json_line(line),
            "{\"step\":120,\"loss\":2.345,\"lr\":0.003,\"tokens\":491520,\"grad_norm\":null,"
            "\"mfu\":null,\"memory_gb\":null,\"attention\":\"sparse\","
            "\"note\":\"say \\\"hi\\\"\\\\\\n\\u0001\"}");
}

TEST(MetricsJson, SettingAKeyAgainReplacesItInPlace) {
  MetricsLine line;
  line.set("loss", 1.0).set("lr", 2.0).set("loss", 3.0);
  ASSERT_EQ(line.fields.size(), 2u);
  EXPECT_EQ(line.fields[0].key, "loss");
  EXPECT_EQ(std::get<double>(line.fields[0].value), 3.0);
  EXPECT_EQ(line.find("absent"), nullptr);
}

TEST(MetricsJson, RandomNumbersParseBackBitForBit) {
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> mantissa(-1, 1);
  std::uniform_int_distribution<int> exponent(-30, 30);
  for (int i = 0; i < 2000; ++i) {
    double d = std::ldexp(mantissa(rng), exponent(rng));
    float f = float(std::ldexp(mantissa(rng), exponent(rng)));
    MetricsLine line;
    line.step = int64_t(rng() >> 1);
    line.set("d", d).set("f", f).set("name", std::string("run ") + std::to_string(i));
    std::string text = to_json_line(line);
    std::optional<MetricsLine> back = parse_json_line(text);
    ASSERT_TRUE(back.has_value()) << text;
    EXPECT_EQ(back->step, line.step);
    ASSERT_EQ(back->fields.size(), 3u) << text;
    // Integral values come back as int64; compare through double.
    auto number = [&](const char* key) {
      const MetricValue* v = back->find(key);
      return std::holds_alternative<int64_t>(*v) ? double(std::get<int64_t>(*v))
                                                 : std::get<double>(*v);
    };
    EXPECT_EQ(number("d"), d) << text;
    EXPECT_EQ(float(number("f")), f) << text;
    EXPECT_EQ(std::get<std::string>(*back->find("name")), "run " + std::to_string(i));
  }
}

TEST(MetricsJson, ParsesNullAndEscapesAndRejectsBrokenLines) {
  auto line = parse_json_line(R"( {"step": 7, "loss": null, "s": "a\"b\\c\u00e9\n"} )");
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(line->step, 7);
  EXPECT_TRUE(std::isnan(std::get<double>(*line->find("loss"))));
  EXPECT_EQ(std::get<std::string>(*line->find("s")), "a\"b\\c\xc3\xa9\n");
  for (const char* broken :
       {"", "{}", "{\"loss\":1}", "{\"step\":1.5}", "{\"step\":1,\"loss\":2.3", "{\"step\":1,",
        "{\"step\":1,\"s\":\"open}", "{\"step\":1} trailing", "[1,2]", "{\"step\":1,\"x\":1e}"}) {
    EXPECT_FALSE(parse_json_line(broken).has_value()) << broken;
  }
}

TEST(MetricsLog, AppendsFlushedLinesAndNeverTruncates) {
  TempDir dir;
  fs::path path = dir / "run" / "metrics.jsonl";
  {
    MetricsLog log((dir / "run").string());
    EXPECT_EQ(log.path(), path.string());
    log.write(MetricsLine(1).set("loss", 4.0));
    // Flushed at once: a reader sees the line while the log is still open.
    EXPECT_EQ(read_lines(path), std::vector<std::string>{"{\"step\":1,\"loss\":4}"});
    log.write(MetricsLine(2).set("loss", 3.5));
  }
  {
    MetricsLog resumed((dir / "run").string());
    resumed.write(MetricsLine(3).set("loss", 3.25));
  }
  EXPECT_EQ(read_lines(path),
            (std::vector<std::string>{"{\"step\":1,\"loss\":4}", "{\"step\":2,\"loss\":3.5}",
                                      "{\"step\":3,\"loss\":3.25}"}));
}

TEST(MetricsLog, UnwritableFolderIsAnErrorNamingThePath) {
  try {
    MetricsLog log("/proc/infllm_no_such_run");
    FAIL() << "expected an infllm::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/proc/infllm_no_such_run/metrics.jsonl"),
              std::string::npos)
        << e.what();
  }
}

TEST(MetricsLog, ResumeDropsLinesAfterTheCheckpointStepAtomically) {
  TempDir dir;
  {
    MetricsLog log(dir.str());
    for (int64_t step = 1; step <= 10; ++step) {
      log.write(MetricsLine(step).set("loss", 10.0 / double(step)));
      if (step == 4) log.write(MetricsLine(step).set("val_loss", 2.5));
    }
  }
  fs::path path = dir / "metrics.jsonl";
  std::ofstream(path, std::ios::app) << "not json, kept\n{\"step\":11,\"lo";  // crash mid-line
  EXPECT_EQ(drop_metrics_after(path.string(), 6), 5);  // steps 7-10 and the half line
  std::vector<std::string> lines = read_lines(path);
  ASSERT_EQ(lines.size(), 8u);  // steps 1-6, the val line of step 4, the unparsable line
  EXPECT_EQ(lines[4], "{\"step\":4,\"val_loss\":2.5}");
  EXPECT_EQ(lines[6], "{\"step\":6,\"loss\":1.6666666666666667}");
  EXPECT_EQ(lines[7], "not json, kept");
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));

  std::string before = read_file(path);
  EXPECT_EQ(drop_metrics_after(path.string(), 6), 0);  // nothing to drop: untouched
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(drop_metrics_after((dir / "absent.jsonl").string(), 0), 0);

  {  // the resumed run appends after the kept lines
    MetricsLog resumed(dir.str());
    resumed.write(MetricsLine(7).set("loss", 1.5));
  }
  EXPECT_EQ(read_lines(path).back(), "{\"step\":7,\"loss\":1.5}");
  EXPECT_EQ(drop_metrics_after(path.string(), 0), 8);  // a fresh start keeps only the stray line
  EXPECT_EQ(read_lines(path), std::vector<std::string>{"not json, kept"});
}

// ---------------------------------------------------------------------------------------------
// TensorBoard

TEST(TensorBoard, Crc32cMatchesPublishedTestVectors) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);
  // RFC 3720 (iSCSI), appendix B.4.
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) ascending += char(i), descending += char(31 - i);
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(crc32c(descending), 0x113FDB5Cu);
  // Continuing a CRC over a second piece equals the CRC of the whole.
  EXPECT_EQ(crc32c("56789", crc32c("1234")), 0xE3069283u);
}

// An independent reader for the files under test: TFRecord framing with both CRCs checked, and a
// protobuf decoder for the Event fields the writer uses.
uint32_t masked(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

template <class Unsigned>
Unsigned little_endian(std::string_view bytes) {
  Unsigned value = 0;
  for (size_t i = 0; i < sizeof(Unsigned); ++i) value |= Unsigned(uint8_t(bytes[i])) << (8 * i);
  return value;
}

std::vector<std::string> read_records(const std::string& file) {
  std::vector<std::string> records;
  size_t pos = 0;
  while (pos < file.size()) {
    if (file.size() - pos < 12) throw std::runtime_error("truncated record header");
    std::string_view header(file.data() + pos, 12);
    uint64_t length = little_endian<uint64_t>(header);
    if (little_endian<uint32_t>(header.substr(8)) != masked(crc32c(header.substr(0, 8))))
      throw std::runtime_error("bad length CRC at offset " + std::to_string(pos));
    if (file.size() - pos - 12 < length + 4) throw std::runtime_error("truncated record");
    std::string_view data(file.data() + pos + 12, length);
    if (little_endian<uint32_t>(std::string_view(file.data() + pos + 12 + length, 4)) !=
        masked(crc32c(data)))
      throw std::runtime_error("bad data CRC at offset " + std::to_string(pos));
    records.emplace_back(data);
    pos += 12 + length + 4;
  }
  return records;
}

struct ProtoField {
  uint32_t number;
  uint32_t wire_type;
  uint64_t integer;        // varint, fixed64 and fixed32 bits
  std::string_view bytes;  // length-delimited
};

std::vector<ProtoField> decode_message(std::string_view message) {
  std::vector<ProtoField> fields;
  size_t pos = 0;
  auto varint = [&] {
    uint64_t value = 0;
    for (int shift = 0;; shift += 7) {
      if (pos >= message.size()) throw std::runtime_error("truncated varint");
      uint8_t byte = uint8_t(message[pos++]);
      value |= uint64_t(byte & 0x7F) << shift;
      if (!(byte & 0x80)) return value;
    }
  };
  while (pos < message.size()) {
    uint64_t key = varint();
    ProtoField field{uint32_t(key >> 3), uint32_t(key & 7), 0, {}};
    if (field.wire_type == 0) {
      field.integer = varint();
    } else if (field.wire_type == 1) {
      field.integer = little_endian<uint64_t>(message.substr(pos, 8));
      pos += 8;
    } else if (field.wire_type == 5) {
      field.integer = little_endian<uint32_t>(message.substr(pos, 4));
      pos += 4;
    } else if (field.wire_type == 2) {
      uint64_t length = varint();
      field.bytes = message.substr(pos, length);
      pos += length;
    } else {
      throw std::runtime_error("unexpected wire type " + std::to_string(field.wire_type));
    }
    if (pos > message.size()) throw std::runtime_error("field runs past the message");
    fields.push_back(field);
  }
  return fields;
}

struct DecodedEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  int64_t session_status = -1;
  std::vector<std::pair<std::string, float>> scalars;
};

DecodedEvent decode_event(std::string_view data) {
  DecodedEvent event;
  for (const ProtoField& f : decode_message(data)) {
    if (f.number == 1 && f.wire_type == 1) std::memcpy(&event.wall_time, &f.integer, 8);
    if (f.number == 2 && f.wire_type == 0) event.step = int64_t(f.integer);
    if (f.number == 3 && f.wire_type == 2) event.file_version = std::string(f.bytes);
    if (f.number == 7 && f.wire_type == 2) {
      for (const ProtoField& s : decode_message(f.bytes))
        if (s.number == 1 && s.wire_type == 0) event.session_status = int64_t(s.integer);
    }
    if (f.number == 5 && f.wire_type == 2) {
      for (const ProtoField& value : decode_message(f.bytes)) {
        std::string tag;
        float simple_value = NAN;
        for (const ProtoField& v : decode_message(value.bytes)) {
          if (v.number == 1 && v.wire_type == 2) tag = std::string(v.bytes);
          if (v.number == 2 && v.wire_type == 5) {
            uint32_t bits = uint32_t(v.integer);
            std::memcpy(&simple_value, &bits, 4);
          }
        }
        event.scalars.emplace_back(tag, simple_value);
      }
    }
  }
  return event;
}

std::vector<fs::path> event_files(const TempDir& dir) {
  std::vector<fs::path> files;
  for (const auto& item : fs::directory_iterator(dir / ""))
    if (item.path().filename().string().rfind("events.out.tfevents.", 0) == 0)
      files.push_back(item.path());
  std::sort(files.begin(), files.end());
  return files;
}

TEST(TensorBoard, RecordFramingCarriesBothMaskedCrcs) {
  std::string record = tfrecord("hello");
  ASSERT_EQ(record.size(), 8u + 4 + 5 + 4);
  EXPECT_EQ(little_endian<uint64_t>(record), 5u);
  EXPECT_EQ(little_endian<uint32_t>(record.substr(8)), masked(crc32c(record.substr(0, 8))));
  EXPECT_EQ(record.substr(12, 5), "hello");
  EXPECT_EQ(little_endian<uint32_t>(record.substr(17)), masked(crc32c("hello")));
  EXPECT_EQ(masked_crc32c("hello"), masked(crc32c("hello")));
  EXPECT_EQ(read_records(record + tfrecord("")), (std::vector<std::string>{"hello", ""}));
  std::string corrupted = record;
  corrupted[13] ^= 1;
  EXPECT_THROW(read_records(corrupted), std::runtime_error);
}

TEST(TensorBoard, EventFileHoldsVersionRestartAndScalars) {
  TempDir dir;
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> loss(1, 10);
  std::vector<double> losses;
  // The writer stamps events with the system clock; read the same clock around it (time()
  // reads a coarser clock that can lag it).
  auto unix_now = [] {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  double before = unix_now();
  {
    TensorBoardWriter writer(dir.str(), 40);
    for (int64_t step = 41; step <= 45; ++step) {
      losses.push_back(loss(rng));
      writer.write(MetricsLine(step)
                       .set("loss", losses.back())
                       .set("lr", 3e-3f)
                       .set("tokens", step * 4096)
                       .set("attention", std::string("dense")));
    }
    writer.write(MetricsLine(46).set("phase", std::string("only text")));  // no event
  }
  std::vector<fs::path> files = event_files(dir);
  ASSERT_EQ(files.size(), 1u);
  std::string name = files[0].filename().string();
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  EXPECT_NE(name.find(std::string(".") + host), std::string::npos) << name;

  std::vector<std::string> records = read_records(read_file(files[0]));
  ASSERT_EQ(records.size(), 2u + 5);
  DecodedEvent version = decode_event(records[0]);
  EXPECT_EQ(version.file_version, "brain.Event:2");
  EXPECT_GE(version.wall_time, before);
  EXPECT_LE(version.wall_time, unix_now());
  DecodedEvent restart = decode_event(records[1]);
  EXPECT_EQ(restart.session_status, 1);  // SessionLog.START
  EXPECT_EQ(restart.step, 41);
  for (int i = 0; i < 5; ++i) {
    DecodedEvent event = decode_event(records[2 + i]);
    EXPECT_EQ(event.step, 41 + i);
    EXPECT_GE(event.wall_time, version.wall_time);
    ASSERT_EQ(event.scalars.size(), 3u);  // the string field has no scalar form
    EXPECT_EQ(event.scalars[0], std::make_pair(std::string("loss"), float(losses[i])));
    EXPECT_EQ(event.scalars[1], std::make_pair(std::string("lr"), 3e-3f));
    EXPECT_EQ(event.scalars[2], std::make_pair(std::string("tokens"), float((41 + i) * 4096)));
  }
}

TEST(TensorBoard, EachWriterStartsANewFileThatSortsAfterTheOldOnes) {
  TempDir dir;
  std::vector<std::string> paths;
  for (int i = 0; i < 3; ++i) paths.push_back(TensorBoardWriter(dir.str(), 0).path());
  std::vector<fs::path> files = event_files(dir);
  ASSERT_EQ(files.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(files[i].string(), paths[i]);
}

// metrics.jsonl and the event files of a run that was resumed must read back identically in
// TensorBoard: the redone steps replace the old ones in both.
TEST(TensorBoard, TensorBoardReadsTheSameScalarsAsMetricsJsonl) {
  if (!python_has("tensorboard")) {
    GTEST_SKIP() << "python3 with tensorboard is not installed (pip install tensorboard); the "
                    "framing and protobuf tests above still check the files";
  }
  TempDir dir;
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> loss(1, 10);
  auto write_steps = [&](int64_t start_step, int64_t last_step) {
    drop_metrics_after((dir / "metrics.jsonl").string(), start_step);
    MetricsLog metrics(dir.str());
    TensorBoardWriter events(dir.str(), start_step);
    for (int64_t step = start_step + 1; step <= last_step; ++step) {
      MetricsLine line(step);
      line.set("loss", loss(rng)).set("lr", 1e-3 * double(step)).set("grad_norm", loss(rng));
      line.set("attention", std::string(step > 12 ? "sparse" : "dense"));
      if (step == 9) line.set("grad_norm", std::nan(""));
      if (step % 5 == 0) line.set("val_loss", loss(rng));
      metrics.write(line);
      events.write(line);
    }
  };
  write_steps(0, 20);   // crashed at step 20 ...
  write_steps(10, 25);  // ... resumed from the checkpoint of step 10
  std::string command = "scripts/check-tensorboard " + dir.str();
  ASSERT_TRUE(fs::exists("scripts/check-tensorboard")) << "run from the repository root";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;

  // The check can fail: a value that differs between the two files is found.
  std::ofstream(dir / "metrics.jsonl", std::ios::app) << "{\"step\":25,\"loss\":-1}\n";
  EXPECT_NE(std::system((command + " 2>/dev/null").c_str()), 0);
}

// ---------------------------------------------------------------------------------------------
// scripts/plot-runs

TEST(PlotRuns, DrawsAPngFromTwoPhases) {
  if (!python_has("matplotlib")) GTEST_SKIP() << "python3 with matplotlib is not installed";
  TempDir dir;
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> noise(0, 0.1);
  auto write_run = [&](const std::string& name, int64_t steps, const char* attention) {
    MetricsLog log((dir / name).string());
    for (int64_t step = 1; step <= steps; ++step) {
      MetricsLine line(step);
      line.set("loss", 5.0 / std::sqrt(double(step)) + noise(rng)).set("lr", 1e-3);
      line.set("tokens_per_s", 40000 + 1000 * noise(rng)).set("tokens", step * 8192);
      line.set("attention", std::string(attention));
      if (step % 10 == 0) line.set("val_loss", 5.2 / std::sqrt(double(step)));
      log.write(line);
    }
  };
  write_run("pretrain", 50, "dense");
  write_run("finetune", 30, "sparse");
  fs::path png = dir / "plot.png";
  ASSERT_TRUE(fs::exists("scripts/plot-runs")) << "run from the repository root";
  std::string command = "scripts/plot-runs " + (dir / "pretrain").string() + " " +
                        (dir / "finetune").string() + " -o " + png.string() + " >/dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  EXPECT_EQ(read_file(png).substr(0, 8), "\x89PNG\r\n\x1a\n");
  std::string missing = "scripts/plot-runs " + (dir / "absent").string() + " -o " + png.string();
  EXPECT_NE(std::system((missing + " 2>/dev/null").c_str()), 0) << missing;
}

}  // namespace
}  // namespace infllm::train
