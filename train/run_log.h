// Everything a run reports, in one place: metrics.jsonl, TensorBoard events and the live
// progress line (rank 0 only; other ranks get a RunLog that writes nothing).
#pragma once

#include <memory>
#include <string>

#include "train/metrics_log.h"
#include "train/progress.h"
#include "train/recipe.h"
#include "train/tensorboard.h"

namespace infllm::train {

struct StepMetrics {
  int64_t step = 0;  // steps completed
  int64_t total_steps = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_s = 0, mfu = 0, memory_gb = 0, memory_total_gb = 0;
  double step_seconds = 0, elapsed_s = 0;
  std::string attention;                // "dense" or "sparse": which path this step's length took
  int world_size = 1;                   // data-parallel ranks; tokens_per_s counts all of them
  double exposed_communication_ms = 0;  // gradient traffic not hidden behind backward
};

class RunLog {
 public:
  // A resumed run (start_step > 0) drops logged lines past start_step, so curves stay clean.
  RunLog(const Recipe& recipe, int64_t start_step, bool writer);
  void step(const StepMetrics& metrics);
  void validation(int64_t step, double loss, double perplexity);
  void finish(const RunSummary& summary);

 private:
  const Recipe& recipe_;
  bool writer_;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  std::unique_ptr<ProgressLine> progress_;
};

}  // namespace infllm::train
