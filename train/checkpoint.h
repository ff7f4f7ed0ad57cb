// Checkpoints: one HDF5 file holding everything a run needs to continue (docs/checkpoints.md).
//
//   /<name>            one dataset per tensor; '/' in a name makes groups ("model/wte" is
//                      dataset wte in group model), dots stay part of the name. Shape and dtype
//                      as in memory; bf16 is stored as 16-bit unsigned with attribute dtype="bf16".
//   root attributes    format = "infllm-checkpoint", format_version = 1, step, then every
//                      string (UTF-8 text), integer (64-bit) and number (double) of the state.
//
// A run writes <out_dir>/checkpoints/step_XXXXXXXX.h5 (the step, 8 digits, zero-padded). A save
// goes to `<path>.tmp-<pid>`, is fsynced, then renamed over `path`: a crash mid-write leaves the
// previous file at `path` whole (and possibly a stale .tmp-<pid> file beside it).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace infllm::train {

// A typed bag of named values. The trainer stores master weights as "model/<param>", AdamW
// moments as "optim/exp_avg/<param>" and "optim/exp_avg_sq/<param>", the resolved recipe as
// the string "recipe", RNG and loader counters as integers (a uint64 seed goes in as its int64
// bit pattern: static_cast<int64_t>(seed) and back round-trips exactly).
struct CheckpointState {
  int64_t step = 0;
  // In any order when saving (names must be distinct); a loaded state lists them by name.
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, std::string> strings;
  std::map<std::string, int64_t> integers;
  std::map<std::string, double> numbers;
  // The file this state was loaded from; names it in the lookup errors below.
  std::string source;

  // Lookups that throw an infllm::Error naming the file, the key and how to fix it
  // (require_tensor searches the list: fine for a model's few hundred tensors).
  const Tensor& require_tensor(const std::string& name) const;
  // Also checks shape and dtype (a checkpoint of another model configuration fails here).
  const Tensor& require_tensor(const std::string& name, const Shape& shape, DType dtype) const;
  const std::string& require_string(const std::string& key) const;
  int64_t require_integer(const std::string& key) const;
  double require_number(const std::string& key) const;
};

// Writes `state` to `path` atomically (temp file, fsync, rename, fsync of the folder); creates
// the folder if needed. Tensors may live on any device. Names must be non-empty, '/'-separated
// parts without empty parts, and no tensor name may be a group of another ("a" and "a/b").
// Attribute keys must be distinct across strings, integers and numbers and must not be one of
// the reserved keys format, format_version, step.
void save_checkpoint(const std::string& path, const CheckpointState& state);

// Reads a checkpoint; tensors land on `device`. With a non-empty `prefix` only tensors whose
// name starts with it are read (e.g. "model/" for a finetune's weights-only start); then at
// least one must match. Attributes are always read. A missing file, a file that is not HDF5, a
// damaged or truncated file, an HDF5 file that is not a checkpoint, and values of unsupported
// types are infllm::Errors naming the file, the key and how to fix it.
CheckpointState load_checkpoint(const std::string& path, Device device = Device::cpu(),
                                std::string_view prefix = {});

// <out_dir>/checkpoints
std::string checkpoint_dir(const std::string& out_dir);
// <out_dir>/checkpoints/step_XXXXXXXX.h5
std::string checkpoint_path(const std::string& out_dir, int64_t step);
// The step of a file named step_<digits>.h5, or nullopt for any other name.
std::optional<int64_t> checkpoint_step(std::string_view filename);
// The step_*.h5 files in `dir`, oldest step first; empty when `dir` does not exist.
std::vector<std::string> list_checkpoints(const std::string& dir);
// The newest step_*.h5 in `dir`, or nullopt when there is none.
std::optional<std::string> latest_checkpoint(const std::string& dir);
// Deletes all but the `keep_last` (>= 1) newest step_*.h5 files in `dir`; other files stay.
void prune_checkpoints(const std::string& dir, int keep_last);

}  // namespace infllm::train
