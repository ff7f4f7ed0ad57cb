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
//   attention recall   per layer, the share of the dense softmax mass that InfLLM-V2's selected
//                      blocks capture: q and k of every attention call are copied to the host,
//                      the exact CPU selection (attention/infllm_v2.h, select_blocks_at) picks
//                      the blocks of `recall_rows` sampled query rows, and the f64 softmax over
//                      all causal keys gives the mass inside them, averaged over rows and heads.
//                      Rows are spread evenly over the positions where the selection can leave
//                      blocks out (more causal blocks than topk); recall is 1 by definition
//                      before them.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "attention/infllm_v2.h"
#include "layers/transformer.h"
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
  std::vector<double> recall_by_layer;  // empty when not measured (or no call exposed q, k)
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

// Mean over `rows` and the Hq heads of the dense causal softmax mass (q.k / sqrt(D), f64) on the
// keys of the blocks that InfLLM-V2 selects for that row and head's KV group.
// q [T, Hq, D], k [T, Hkv, D] of one sequence, row-major f32.
double attention_recall(const attention::SparseConfig& config, int T, int Hq, int Hkv, int D,
                        const float* q, const float* k, const std::vector<int>& rows);

// `count` rows spread evenly over [first, T), first = topk * block_size, the first position
// whose causal blocks outnumber topk; over [0, T) when T has no such position.
std::vector<int> recall_rows(const attention::SparseConfig& config, int T, int64_t count);

}  // namespace infllm::train
