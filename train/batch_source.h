// Where training batches come from: the token file through the deterministic loader, or
// uniform random tokens (data.train: random) for benchmarks. Either way a batch is a function
// of (seed, step, rank), so a resumed run continues with exactly the batches it would have seen.
// With data.task_rate > 0, each window of the token file is replaced, with that probability, by
// a synthetic long-context task (data/synthetic_tasks.h) of the same length whose filler is drawn
// from the same file; which windows, and the tasks themselves, depend on (seed, global sample).
#pragma once

#include <memory>

#include "core/tensor.h"
#include "data/loader.h"
#include "data/synthetic_tasks.h"
#include "train/recipe.h"

namespace infllm::train {

struct TokenBatch {
  Tensor inputs;   // i32 [B, T] on the run's device
  Tensor targets;  // i32 [B, T]
  int64_t valid_targets = 0;
};

class BatchSource {
 public:
  BatchSource(const Recipe& recipe, Device device, int rank, int world);
  TokenBatch next();
  int64_t step() const { return step_; }  // micro-batches handed out so far (by this rank)
  void set_step(int64_t step);
  // Windows handed out so far by all ranks together.
  int64_t global_samples() const;
  // Continues a run that consumed `samples` windows in total, with this source's world size and
  // batch (which may differ from the run's): the next global batch starts at window `samples`.
  // Returns false when that is not a whole number of global batches; the position is then
  // rounded down and a few windows are seen again.
  bool seek_global_samples(int64_t samples);
  int64_t vocab_size() const;

 private:
  const Recipe& recipe_;
  Device device_;
  int rank_;
  int world_;
  // Overwrites the rows of [B, T + 1]-shaped inputs/targets that the task mix picks.
  void mix_tasks(std::vector<int32_t>& inputs, std::vector<int32_t>& targets);

  std::unique_ptr<data::Loader> loader_;          // null for random data
  std::unique_ptr<data::TokenFile> filler_file_;  // the training file again, when tasks are mixed
  data::FillerText filler_;
  std::vector<data::TaskKind> task_kinds_;
  int64_t step_ = 0;
};

}  // namespace infllm::train
