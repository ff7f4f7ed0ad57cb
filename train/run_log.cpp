#include "train/run_log.h"

#include <filesystem>

namespace infllm::train {

RunLog::RunLog(const Recipe& recipe, int64_t start_step, bool writer)
    : recipe_(recipe), writer_(writer) {
  if (!writer) return;
  const std::string& dir = recipe.train.out_dir;
  std::string metrics_path = (std::filesystem::path(dir) / "metrics.jsonl").string();
  if (std::filesystem::exists(metrics_path)) drop_metrics_after(metrics_path, start_step);
  metrics_ = std::make_unique<MetricsLog>(dir);
  if (recipe.log.tensorboard) tensorboard_ = std::make_unique<TensorBoardWriter>(dir, start_step);
  if (recipe.log.progress) progress_ = std::make_unique<ProgressLine>(stderr, recipe.log.every);
}

void RunLog::step(const StepMetrics& m) {
  if (!writer_) return;
  if (progress_) {
    ProgressState state;
    state.step = m.step;
    state.total_steps = m.total_steps;
    state.loss = m.loss;
    state.lr = m.lr;
    state.tokens_per_s = m.tokens_per_s;
    state.mfu = m.mfu;
    state.memory_gb = m.memory_gb;
    state.memory_total_gb = m.memory_total_gb;
    state.elapsed_s = m.elapsed_s;
    progress_->update(state, m.step_seconds);
  }
  if (m.step % recipe_.log.every != 0 && m.step != m.total_steps) return;
  MetricsLine line;
  line.step = m.step;
  line.set("loss", m.loss)
      .set("lr", m.lr)
      .set("grad_norm", m.grad_norm)
      .set("tokens_per_s", m.tokens_per_s)
      .set("time_s", m.elapsed_s)
      .set("tokens", double(m.step) * recipe_.data.batch_size * recipe_.data.seq_len *
                         recipe_.data.grad_accum * m.world_size)
      .set("seq_len", int64_t(recipe_.data.seq_len))
      .set("attention", m.attention);
  if (m.mfu > 0) line.set("mfu", m.mfu);  // known only on GPUs with a known peak
  if (m.memory_gb > 0) line.set("memory_gb", m.memory_gb);
  if (m.world_size > 1)
    line.set("world_size", int64_t(m.world_size))
        .set("comm_exposed_ms", m.exposed_communication_ms);
  metrics_->write(line);
  if (tensorboard_) tensorboard_->write(line);
}

void RunLog::validation(int64_t step, double loss, double perplexity) {
  if (!writer_) return;
  MetricsLine line;
  line.step = step;
  line.set("val_loss", loss).set("val_ppl", perplexity);
  metrics_->write(line);
  if (tensorboard_) tensorboard_->write(line);
  if (progress_) progress_->clear();
  std::fprintf(stderr, "step %lld: validation loss %.4f, perplexity %.2f\n", (long long)step, loss,
               perplexity);
}

void RunLog::finish(const RunSummary& summary) {
  if (!writer_) return;
  if (progress_) progress_->finish();
  std::fprintf(stderr, "%s\n", format_summary(summary).c_str());
}

}  // namespace infllm::train
