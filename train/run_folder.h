// A run folder (train.out_dir) has one owner. The process that writes a run holds an exclusive
// flock() on <out_dir>/infllm.lock for the run's life; the kernel releases it when the process
// ends however it ends (kill -9 included), so a stale lock file never blocks. A second writer
// fails at once with the holder's pid and host, which the holder wrote into the lock file.
//
// A fresh start (no --resume) into a folder that already holds a run (checkpoints or
// metrics.jsonl) is an error unless --overwrite, which moves the earlier run's files into
// <out_dir>/previous-<YYYYmmdd-HHMMSS>/ (nothing is deleted). Nothing in the folder is written
// or moved until accept(): a run rejected before that (bad recipe, bad data, a resume checkpoint
// that does not load) leaves the folder as it found it. With data parallelism only rank 0
// claims the folder; no rank ever waits on the lock.
#pragma once

#include <string>

namespace infllm::train {

enum class RunStart { fresh, resume, overwrite };

class RunFolder {
 public:
  static constexpr const char* kLockName = "infllm.lock";

  // Creates `out_dir` if needed, takes the lock and checks `start` against what the folder
  // holds. Throws an infllm::Error naming the folder (and the holder's pid) on any conflict.
  RunFolder(std::string out_dir, RunStart start);
  // Releases the lock and removes the lock file; removes `out_dir` again when this claim
  // created it and the run was never accepted (it is then empty).
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  // The run is accepted: moves an earlier run aside (--overwrite), creates checkpoints/ and
  // writes recipe.yaml (atomically: temp file, rename). Returns the folder the earlier run was
  // moved to, or "" when nothing was moved.
  std::string accept(const std::string& recipe_yaml);

  const std::string& path() const { return out_dir_; }

 private:
  void release();

  std::string out_dir_;
  RunStart start_;
  int lock_fd_ = -1;
  bool created_ = false;
  bool accepted_ = false;
};

// What of an earlier run `out_dir` holds, for messages ("3 checkpoints (newest
// step_00000024.h5), metrics.jsonl"); "" when it holds none.
std::string describe_earlier_run(const std::string& out_dir);

}  // namespace infllm::train
