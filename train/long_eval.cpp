#include "train/long_eval.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <type_traits>

#include "autograd/node.h"
#include "core/error.h"
#include "core/ops.h"
#include "data/eval_windows.h"
#include "data/synthetic_tasks.h"
#include "data/token_file.h"
#include "train/metrics_log.h"

namespace infllm::train {

void add_bucket_losses(const float* logits, const int32_t* targets, int64_t T, int64_t V,
                       int64_t bucket, std::vector<double>& sums, std::vector<int64_t>& counts) {
  INFLLM_CHECK(bucket >= 1, "loss by position: bucket ", bucket, " must be >= 1");
  const size_t n = size_t((T + bucket - 1) / bucket);
  if (sums.size() < n) sums.resize(n, 0.0), counts.resize(n, 0);
  for (int64_t t = 0; t < T; ++t) {
    if (targets[t] < 0) continue;
    INFLLM_CHECK(targets[t] < V, "loss by position: target ", targets[t], " >= vocab ", V);
    const float* row = logits + t * V;
    double max = row[0];
    for (int64_t v = 1; v < V; ++v) max = std::max(max, double(row[v]));
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - max);
    sums[size_t(t / bucket)] += max + std::log(sum) - double(row[targets[t]]);
    counts[size_t(t / bucket)] += 1;
  }
}

std::vector<int32_t> argmax_rows(const float* logits, int64_t T, int64_t V) {
  std::vector<int32_t> out(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    const float* row = logits + t * V;
    out[size_t(t)] = int32_t(std::max_element(row, row + V) - row);
  }
  return out;
}

int64_t answer_tokens_right(const std::vector<int32_t>& argmax, const std::vector<uint32_t>& tokens,
                            int64_t answer_begin) {
  INFLLM_CHECK(answer_begin >= 1 && argmax.size() == tokens.size(),
               "answer scoring: bad answer position ", answer_begin);
  int64_t right = 0;
  for (size_t t = size_t(answer_begin); t < tokens.size(); ++t)
    right += uint32_t(argmax[t - 1]) == tokens[t];
  return right;
}

namespace {

Tensor host_logits(const TransformerLM& model, const std::vector<int32_t>& tokens, int64_t T,
                   Device device) {
  Tensor inputs = Tensor::from_vector(tokens, {int64_t(tokens.size()) / T, T}, device);
  return model.logits(inputs).to(Device::cpu()).contiguous();
}

PositionLoss loss_by_position(const TransformerLM& model, const std::string& path, int64_t T,
                              const LongEvalOptions& options, Device device) {
  data::EvalOptions eval;
  eval.T = T;
  eval.B = 1;
  eval.max_windows = options.loss_windows;
  data::EvalWindows windows(path, eval);
  INFLLM_CHECK(windows.num_windows() > 0, "infllm eval --long: ", path, " holds fewer than ", T + 1,
               " tokens (use shorter --lengths or a larger validation file)");
  std::vector<double> sums;
  std::vector<int64_t> counts;
  PositionLoss out;
  out.length = T;
  for (int64_t i = 0; i < windows.num_batches(); ++i) {
    data::EvalBatch batch = windows.batch(i);
    if (batch.rows == 0) continue;
    Tensor logits = host_logits(model, batch.inputs, T, device);
    const int64_t V = logits.size(2);
    for (int64_t r = 0; r < batch.rows; ++r)
      add_bucket_losses(logits.data<float>() + r * T * V, batch.targets.data() + r * T, T, V,
                        options.bucket, sums, counts);
    out.windows += batch.rows;
  }
  double all = 0;
  int64_t n = 0;
  for (size_t b = 0; b < sums.size(); ++b) {
    out.buckets.push_back(counts[b] ? sums[b] / double(counts[b]) : NAN);
    all += sums[b];
    n += counts[b];
  }
  out.loss = all / double(n);
  return out;
}

TaskGrid task_grid(const TransformerLM& model, data::TaskKind kind, const data::FillerText& filler,
                   const LongEvalOptions& options, Device device) {
  TaskGrid grid;
  grid.kind = std::string(data::to_string(kind));
  grid.lengths = options.lengths;
  grid.depths = options.depths;
  for (size_t li = 0; li < options.lengths.size(); ++li) {
    std::vector<double> exact_row, token_row;
    for (size_t di = 0; di < options.depths.size(); ++di) {
      int64_t exact = 0, right = 0, answer_tokens = 0;
      for (int64_t s = 0; s < options.task_samples; ++s) {
        data::TaskSpec spec;
        spec.kind = kind;
        spec.length = options.lengths[li];
        spec.depth = options.depths[di];
        spec.needles = options.needles;
        spec.seed = options.seed;
        spec.index = ((uint64_t(kind) * 64 + li) * 64 + di) * 4096 + uint64_t(s);
        const data::TaskSequence task = data::make_task(spec, filler);
        std::vector<int32_t> tokens(task.tokens.begin(), task.tokens.end());
        Tensor logits = host_logits(model, tokens, spec.length, device);
        const std::vector<int32_t> argmax =
            argmax_rows(logits.data<float>(), spec.length, logits.size(2));
        const int64_t got = answer_tokens_right(argmax, task.tokens, task.answer_begin);
        right += got;
        answer_tokens += task.answer_length;
        exact += got == task.answer_length;
      }
      exact_row.push_back(double(exact) / double(options.task_samples));
      token_row.push_back(double(right) / double(answer_tokens));
    }
    grid.accuracy.push_back(exact_row);
    grid.token_accuracy.push_back(token_row);
  }
  return grid;
}

std::string json_list(const std::vector<double>& values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + json_number(values[i]);
  return s + "]";
}

std::string json_list(const std::vector<int64_t>& values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + std::to_string(values[i]);
  return s + "]";
}

std::string json_grid(const std::vector<std::vector<double>>& rows) {
  std::string s = "[";
  for (size_t i = 0; i < rows.size(); ++i) s += (i ? ", " : "") + json_list(rows[i]);
  return s + "]";
}

}  // namespace

LongEvalReport run_long_eval(TransformerLM& model, const std::string& val_path,
                             const LongEvalOptions& options, Device device) {
  autograd::NoGradGuard no_grad;
  INFLLM_CHECK(!options.lengths.empty(), "infllm eval --long: no --lengths given");
  LongEvalReport report;
  for (int64_t T : options.lengths) {
    std::fprintf(stderr, "infllm eval: loss by position at %lld tokens\n", (long long)T);
    report.loss_by_position.push_back(loss_by_position(model, val_path, T, options, device));
  }
  const data::TokenFile val(val_path);
  const data::FillerText filler = data::FillerText::from_file(val);
  if (options.task_samples > 0)
    for (data::TaskKind kind : {data::TaskKind::passkey, data::TaskKind::needle}) {
      std::fprintf(stderr, "infllm eval: %s accuracy\n", std::string(to_string(kind)).c_str());
      report.tasks.push_back(task_grid(model, kind, filler, options, device));
    }
  if (options.recall_rows > 0) {
    report.recall_length = options.recall_length > 0
                               ? options.recall_length
                               : *std::max_element(options.lengths.begin(), options.lengths.end());
    report.recall_rows = options.recall_rows;
    std::fprintf(stderr, "infllm eval: attention recall at %lld tokens, %lld rows per layer\n",
                 (long long)report.recall_length, (long long)options.recall_rows);
    data::EvalOptions eval;
    eval.T = report.recall_length;
    eval.max_windows = 1;
    data::EvalWindows windows(val_path, eval);
    INFLLM_CHECK(windows.num_windows() > 0, "infllm eval --long: ", val_path, " holds fewer than ",
                 report.recall_length + 1, " tokens for the recall window");
    data::EvalBatch batch = windows.batch(0);
    Tensor tokens = Tensor::from_vector(batch.inputs, {1, report.recall_length}, device);
    report.recall = measure_attention_recall(model, tokens, options.recall_rows);
  }
  return report;
}

std::string long_eval_json(const LongEvalReport& report, const LongEvalOptions& options,
                           const std::string& header) {
  std::string s = "{" + header + ", \"bucket\": " + std::to_string(options.bucket);
  s += ", \"loss_by_position\": [";
  for (size_t i = 0; i < report.loss_by_position.size(); ++i) {
    const PositionLoss& p = report.loss_by_position[i];
    s += std::string(i ? ", " : "") + "{\"length\": " + std::to_string(p.length) +
         ", \"windows\": " + std::to_string(p.windows) + ", \"loss\": " + json_number(p.loss) +
         ", \"buckets\": " + json_list(p.buckets) + "}";
  }
  s += "], \"tasks\": {";
  for (size_t i = 0; i < report.tasks.size(); ++i) {
    const TaskGrid& g = report.tasks[i];
    s += std::string(i ? ", " : "") + json_string(g.kind) +
         ": {\"lengths\": " + json_list(g.lengths) + ", \"depths\": " + json_list(g.depths) +
         ", \"samples\": " + std::to_string(options.task_samples) +
         ", \"scoring\": \"teacher-forced exact match of the answer's argmax tokens\"" +
         ", \"accuracy\": " + json_grid(g.accuracy) +
         ", \"token_accuracy\": " + json_grid(g.token_accuracy) + "}";
  }
  s += "}, \"recall\": {\"length\": " + std::to_string(report.recall_length) +
       ", \"rows_per_layer\": " + std::to_string(report.recall_rows) +
       ", \"selection\": " + json_string(report.recall.selection) +
       ", \"by_layer\": " + json_list(report.recall.by_layer) +
       ", \"union_by_layer\": " + json_list(report.recall.union_by_layer) + "}}";
  return s;
}

}  // namespace infllm::train

namespace infllm::train {
namespace {

// One number of an option, checked: a whole number when T is integral, in [min, max].
template <class T>
T parse_number(const std::string& name, const std::string& item, const std::string& text,
               double min, double max) {
  char* stop = nullptr;
  const double value = std::strtod(item.c_str(), &stop);
  INFLLM_CHECK(!item.empty() && stop && *stop == '\0' && std::isfinite(value) && value >= min &&
                   value <= max && (std::is_floating_point_v<T> || value == std::floor(value)),
               "infllm eval ", name, ": '", item, "' in '", text, "' is not a ",
               std::is_floating_point_v<T> ? "number" : "whole number", " in [", min, ", ", max,
               "]");
  return T(value);
}

// A comma-separated list option ("4096,8192"), or `fallback` when absent.
template <class T>
std::vector<T> parse_list(const std::map<std::string, std::string>& options,
                          const std::string& name, std::vector<T> fallback, double min,
                          double max) {
  const auto it = options.find(name);
  if (it == options.end()) return fallback;
  std::vector<T> out;
  size_t start = 0;
  while (start <= it->second.size()) {
    const size_t end = std::min(it->second.find(',', start), it->second.size());
    out.push_back(
        parse_number<T>(name, it->second.substr(start, end - start), it->second, min, max));
    start = end + 1;
  }
  return out;
}

template <class T>
T parse_one(const std::map<std::string, std::string>& options, const std::string& name, T fallback,
            double min, double max) {
  const auto it = options.find(name);
  return it == options.end() ? fallback : parse_number<T>(name, it->second, it->second, min, max);
}

}  // namespace

LongEvalOptions long_eval_options(const std::map<std::string, std::string>& options) {
  constexpr double kMaxLength = double(1 << 24), kMany = 1e12;
  LongEvalOptions o;
  o.lengths = parse_list<int64_t>(options, "--lengths", o.lengths, 2, kMaxLength);
  o.depths = parse_list<double>(options, "--depths", o.depths, 0, 1);
  o.bucket = parse_one<int64_t>(options, "--bucket", o.bucket, 1, kMaxLength);
  o.loss_windows = parse_one<int64_t>(options, "--loss-windows", o.loss_windows, 1, kMany);
  o.task_samples = parse_one<int64_t>(options, "--task-samples", o.task_samples, 0, kMany);
  o.recall_rows = parse_one<int64_t>(options, "--recall-rows", o.recall_rows, 0, kMaxLength);
  o.recall_length = parse_one<int64_t>(options, "--recall-len", o.recall_length, 0, kMaxLength);
  return o;
}

int long_eval_main(LoadedModel& loaded, const std::string& data, const LongEvalOptions& options,
                   const std::string& json_path, const std::string& checkpoint) {
  LongEvalReport report = run_long_eval(*loaded.model, data, options, loaded.device);
  const std::string mode(attention::to_string(loaded.model->config().attention.mode));
  const std::string header = "\"checkpoint\": " + json_string(checkpoint) +
                             ", \"step\": " + std::to_string(loaded.step) +
                             ", \"data\": " + json_string(data) + ", \"attention\": \"" + mode +
                             "\", \"device\": " + json_string(loaded.device.str());
  const std::string json = long_eval_json(report, options, header);
  if (!json_path.empty()) {
    const std::string temp = json_path + ".tmp";
    std::FILE* f = std::fopen(temp.c_str(), "w");
    INFLLM_CHECK(f, "infllm eval --json ", json_path, ": cannot write ", temp,
                 " (does its folder exist?)");
    const bool ok = std::fputs((json + "\n").c_str(), f) >= 0;
    INFLLM_CHECK(std::fclose(f) == 0 && ok, "infllm eval --json: writing ", temp, " failed");
    INFLLM_CHECK(std::rename(temp.c_str(), json_path.c_str()) == 0, "infllm eval --json: cannot ",
                 "rename ", temp, " to ", json_path);
  }
  std::printf("%s\n", json.c_str());
  return 0;
}

}  // namespace infllm::train
