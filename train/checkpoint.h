// Checkpoints: one HDF5 file holding everything a run needs to continue (docs/checkpoints.md).
//
//   /<name>            one dataset per tensor; '/' in a name makes groups ("optim/master/wte"
//                      is dataset wte in group optim/master), dots stay part of the name. Shape
//                      and dtype as in memory; bf16 is stored as 16-bit unsigned with attribute
//                      dtype="bf16". Attribute checksum = "xxh64:<16 hex digits>" over the
//                      tensor's name, dtype, shape and little-endian bytes.
//   root attributes    format = "infllm-checkpoint", format_version = 2, step, then every
//                      string (UTF-8 text), integer (64-bit) and number (double) of the state;
//                      checksums (a table: one checksum per metadata key and per tensor) and
//                      checksum (over that table), so a damaged key or tensor is named.
//
// Every load verifies what it reads; format_version 1 files (written before checksums) load
// unverified with a warning. A run writes <out_dir>/checkpoints/step_XXXXXXXX.h5 (the step, 8
// digits, zero-padded). A save goes to `<path>.tmp-<pid>`, is fsynced, then renamed over
// `path`: a crash mid-write leaves the previous file at `path` whole (and possibly a stale
// .tmp-<pid> file beside it); a failed save (disk full, read-only folder) removes its temp file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
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

// A checkpoint file that cannot be read back as written: truncated, not HDF5 any more, or a
// tensor or metadata key that does not match its checksum. The message names the file and the
// tensor or key. (Other load errors - a missing file, a newer format, a different model - are
// plain infllm::Errors: an earlier checkpoint would not help with those.)
class CheckpointDamaged : public Error {
 public:
  using Error::Error;
};

// Writes `state` to `path` atomically (temp file, fsync, rename, fsync of the folder); creates
// the folder if needed. Tensors may live on any device. Names must be non-empty, '/'-separated
// parts without empty parts, and no tensor name may be a group of another ("a" and "a/b").
// Attribute keys must be distinct across strings, integers and numbers, must not hold a tab or
// a newline, and must not be one of the reserved keys format, format_version, step, checksum,
// checksums. Every floating-point tensor must be finite (require_finite). On any failure
// (disk full, read-only folder, HDF5 error) it throws one infllm::Error and leaves no temp file
// and the previous file at `path` untouched.
void save_checkpoint(const std::string& path, const CheckpointState& state);

// Throws an infllm::Error naming `path` and the first tensor of `state` holding a NaN or an
// Inf (a checkpoint of such state would poison every run that resumes from it).
void require_finite(const CheckpointState& state, const std::string& path);

// Reads a checkpoint; tensors land on `device`. With a non-empty `prefix` only tensors whose
// name starts with it are read (e.g. "optim/master/" for a finetune's weights-only start); then
// at least one must match. Attributes are always read. The metadata and every tensor read are
// checked against their checksums. A damaged or truncated file is a CheckpointDamaged; a
// missing file, an HDF5 file that is not a checkpoint and values of unsupported types are
// infllm::Errors; each names the file, the key and how to fix it.
CheckpointState load_checkpoint(const std::string& path, Device device = Device::cpu(),
                                std::string_view prefix = {});

// The attributes of the checkpoint at `path` (step, strings, integers, numbers), checked
// against the checksum table, without reading any tensor: what the file says about its run
// (recipe, tokenizer) at a fraction of a load's time and memory. Errors as load_checkpoint's.
CheckpointState load_checkpoint_attributes(const std::string& path);

// Reads every tensor and attribute of `path` and checks them against their checksums, keeping
// no tensor (one host buffer at a time). Returns what is wrong - the message load_checkpoint
// would throw - or nullopt when the file is whole.
std::optional<std::string> verify_checkpoint(const std::string& path);

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

// The newest checkpoint of `dir` that verifies, and the newer ones that do not (newest first,
// each with its problem). Verifies newest first and stops at the first good file.
struct CheckpointScan {
  std::optional<std::string> newest_good;
  std::vector<std::pair<std::string, std::string>> damaged;  // path, what is wrong
};
CheckpointScan scan_checkpoints(const std::string& dir);

// Deletes the step_*.h5 files of `dir` older than the `keep_last` (>= 1) newest, except the
// newest one that verifies: it verifies newest first until a file passes and never deletes
// that one (nor anything when none passes). Other files stay. Returns the newest verified
// checkpoint, or nullopt when none verifies.
std::optional<std::string> prune_checkpoints(const std::string& dir, int keep_last);

// Renames a damaged checkpoint to <path>.damaged (<path>.damaged.2, ... when taken) so that
// listing, `latest`, pruning and resume no longer see it, and a new checkpoint of the same step
// cannot replace it. Returns the new path.
std::string set_aside_damaged(const std::string& path);

}  // namespace infllm::train
