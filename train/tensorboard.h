// TensorBoard event files, written without TensorFlow or protobuf, so `tensorboard --logdir runs`
// shows a run's curves.
//
// An event file is a sequence of TFRecords:
//   uint64 length | uint32 masked_crc32c(length) | data[length] | uint32 masked_crc32c(data)
// (little-endian), each data a serialized tensorflow.Event protobuf:
//   Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//                Summary summary = 5; SessionLog session_log = 7; }
//   Summary    { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
//   SessionLog { SessionStatus status = 1; }   START = 1
// The first record carries file_version "brain.Event:2". A SessionLog START at step s tells
// TensorBoard to forget every scalar it has read with step >= s: written when a run (re)starts,
// it hides the steps that a resumed run is about to redo.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "train/metrics_log.h"

namespace infllm::train {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), continuing from `crc` (0 to start).
uint32_t crc32c(std::string_view data, uint32_t crc = 0);
// The masked form TFRecord stores: rotate right by 15 and add 0xa282ead8.
uint32_t masked_crc32c(std::string_view data);
// One framed record around `data`.
std::string tfrecord(std::string_view data);

// Serialized Event messages.
std::string file_version_event(double wall_time);
std::string session_start_event(double wall_time, int64_t step);
std::string scalars_event(double wall_time, int64_t step,
                          const std::vector<std::pair<std::string, float>>& scalars);

// Writes <run_dir>/events.out.tfevents.<unix seconds>.<hostname> (with a ".N" suffix if that name
// is taken), a new file per writer, as TensorBoard expects of a restarted run.
class TensorBoardWriter {
 public:
  // `start_step` is the step the run continues from (0 for a fresh run): scalars that older
  // event files in the folder hold for later steps are hidden.
  TensorBoardWriter(const std::string& run_dir, int64_t start_step);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One event holding every number of the line (tag = key, e.g. "loss", "val_ppl"); string
  // fields have no scalar form and are left out. Flushed.
  void write(const MetricsLine& line);
  const std::string& path() const { return path_; }

 private:
  void write_record(std::string_view event);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace infllm::train
