// Long-context evaluation of one checkpoint through one attention path (`infllm eval --long`):
//
//   loss by position   mean next-token loss of the first K validation windows of each length,
//                      in buckets of `bucket` positions (does the model use far context?);
//   task accuracy      passkey and needle retrieval (data/synthetic_tasks.h, filler from the
//                      validation file) over a (length x depth) grid. The answer is scored by
//                      teacher-forced exact match: every answer token must be the argmax of the
//                      logits one position before it. For a fixed-length answer this is exactly
//                      greedy decoding (greedy decoding reproduces the answer iff each argmax
//                      does), in one forward pass;
//   attention recall   per layer, the share of the dense softmax mass that the evaluated path's
//                      selected blocks capture (InfLLM-V2's, or the NSA variant's own from its
//                      learned compressed keys), on one validation window of `recall_length`
//                      tokens, `recall_rows` sampled query rows per layer
//                      (train/attention_recall.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "layers/transformer.h"
#include "train/attention_recall.h"
#include "train/load_model.h"

namespace infllm::train {

struct LongEvalOptions {
  std::vector<int64_t> lengths = {4096, 8192, 16384, 32768};
  int64_t bucket = 1024;     // positions per loss bucket
  int64_t loss_windows = 4;  // validation windows per length
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int64_t task_samples = 4;   // sequences per (kind, length, depth)
  int needles = 4;            // needle task: key-value pairs hidden
  int64_t recall_length = 0;  // 0: the longest of `lengths`
  int64_t recall_rows = 256;  // sampled query rows per layer; 0: no recall
  uint64_t seed = 20250924;   // task contents
};

struct PositionLoss {
  int64_t length = 0;
  int64_t windows = 0;
  double loss = 0;              // over every scored position
  std::vector<double> buckets;  // mean loss of positions [i * bucket, (i + 1) * bucket)
};

struct TaskGrid {
  std::string kind;  // "passkey" / "needle"
  std::vector<int64_t> lengths;
  std::vector<double> depths;
  // [length][depth]: share of sequences answered exactly / of answer tokens right.
  std::vector<std::vector<double>> accuracy, token_accuracy;
};

struct LongEvalReport {
  std::vector<PositionLoss> loss_by_position;
  std::vector<TaskGrid> tasks;
  int64_t recall_length = 0, recall_rows = 0;
  AttentionRecall recall;  // selection "" and no layers when not measured
};

// Runs every part on `model` as configured (its attention options decide dense or sparse; the
// recall pass installs an observer for one forward and restores them). `val_path` gives the
// loss windows and the tasks' filler.
LongEvalReport run_long_eval(TransformerLM& model, const std::string& val_path,
                             const LongEvalOptions& options, Device device);

// The report as one JSON object, with `header` (already JSON members, e.g. "\"step\": 3")
// first.
std::string long_eval_json(const LongEvalReport& report, const LongEvalOptions& options,
                           const std::string& header);

// The --long options of `infllm eval` (--lengths, --depths, --bucket, --loss-windows,
// --task-samples, --recall-rows, --recall-len), checked before any checkpoint is read.
// `options` maps "--lengths" to "4096,8192" and so on (CliArgs::options).
LongEvalOptions long_eval_options(const std::map<std::string, std::string>& options);

// Runs the evaluation on a loaded checkpoint and prints the JSON (also written atomically to
// `json_path` unless empty). Returns the exit code.
int long_eval_main(LoadedModel& loaded, const std::string& data, const LongEvalOptions& options,
                   const std::string& json_path, const std::string& checkpoint);

// ---- The pieces, for tests ----

// Adds the next-token losses of one sequence to per-bucket sums: logits [T, V] (f32), targets
// [T] (-1 ignored). Loss at position t = logsumexp(logits[t]) - logits[t][targets[t]], in f64.
void add_bucket_losses(const float* logits, const int32_t* targets, int64_t T, int64_t V,
                       int64_t bucket, std::vector<double>& sums, std::vector<int64_t>& counts);

// Argmax of each row of logits [T, V] (lowest index on ties).
std::vector<int32_t> argmax_rows(const float* logits, int64_t T, int64_t V);

// Answer tokens right when tokens[answer_begin, T) are predicted from logits' argmax at
// positions [answer_begin - 1, T - 1).
int64_t answer_tokens_right(const std::vector<int32_t>& argmax, const std::vector<uint32_t>& tokens,
                            int64_t answer_begin);

}  // namespace infllm::train
