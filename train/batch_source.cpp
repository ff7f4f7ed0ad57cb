#include "train/batch_source.h"

#include <cstring>
#include <string>
#include <vector>

#include "core/ops.h"

namespace infllm::train {
namespace {

// Host span -> device tensor, staged through pinned memory when the loader gave pinned data.
Tensor upload(std::span<const int32_t> values, int64_t B, int64_t T, Device device) {
  Tensor host = Tensor::empty({B, T}, DType::i32, Device::cpu());
  std::memcpy(host.data<int32_t>(), values.data(), values.size_bytes());
  return host.to(device);
}

}  // namespace

BatchSource::BatchSource(const Recipe& recipe, Device device, int rank, int world)
    : recipe_(recipe), device_(device), rank_(rank), world_(world) {
  if (recipe.data.train == kRandomData) return;
  data::LoaderOptions options;
  options.T = recipe.data.seq_len;
  options.B = recipe.data.batch_size;
  options.rank = rank;
  options.world = world;
  options.seed = recipe.train.seed;
  options.prefetch = recipe.data.prefetch;
  loader_ = std::make_unique<data::Loader>(recipe.data.train, options);
  if (recipe.data.task_rate > 0) {
    for (const std::string& kind : recipe.data.task_kinds)
      task_kinds_.push_back(data::parse_task_kind(kind, "data.task_kinds"));
    filler_file_ = std::make_unique<data::TokenFile>(recipe.data.train);
    filler_ = data::FillerText::from_file(*filler_file_);
    for (data::TaskKind kind : task_kinds_)
      INFLLM_CHECK(recipe.data.seq_len + 1 >= data::min_task_length(kind, data::TaskSpec{}.needles),
                   "data.task_kinds: a ", data::to_string(kind), " task needs at least ",
                   data::min_task_length(kind, data::TaskSpec{}.needles) - 1,
                   " tokens per sequence, data.seq_len is ", recipe.data.seq_len,
                   " (raise data.seq_len or set data.task_rate: 0)");
  }
  INFLLM_CHECK(loader_->vocab_size() <= recipe.model.vocab_size, "data.train: ", recipe.data.train,
               " has vocab_size ", loader_->vocab_size(), " but model.vocab_size is ",
               recipe.model.vocab_size, " (set model.vocab_size to at least ",
               loader_->vocab_size(), ")");
}

int64_t BatchSource::global_samples() const {
  return step_ * world_ * recipe_.data.batch_size;
}

bool BatchSource::seek_global_samples(int64_t samples) {
  const int64_t per_step = int64_t(world_) * recipe_.data.batch_size;
  set_step(samples / per_step);
  return samples % per_step == 0;
}

int64_t BatchSource::vocab_size() const {
  return loader_ ? loader_->vocab_size() : recipe_.model.vocab_size;
}

void BatchSource::set_step(int64_t step) {
  step_ = step;
  if (loader_) loader_->set_step(step);
}

void BatchSource::mix_tasks(std::vector<int32_t>& inputs, std::vector<int32_t>& targets) {
  const int64_t B = recipe_.data.batch_size, T = recipe_.data.seq_len;
  for (int64_t b = 0; b < B; ++b) {
    // The loader's numbering of global samples (data/loader.h).
    const uint64_t sample = uint64_t((step_ * world_ + rank_) * B + b);
    data::TaskSpec spec;
    if (!data::draw_training_task(recipe_.train.seed, sample, recipe_.data.task_rate, task_kinds_,
                                  T + 1, spec))
      continue;
    const data::TaskSequence task = data::make_task(spec, filler_);
    for (int64_t t = 0; t < T; ++t) {
      inputs[size_t(b * T + t)] = int32_t(task.tokens[size_t(t)]);
      targets[size_t(b * T + t)] = int32_t(task.tokens[size_t(t + 1)]);
    }
  }
}

TokenBatch BatchSource::next() {
  int64_t B = recipe_.data.batch_size, T = recipe_.data.seq_len;
  TokenBatch batch;
  batch.valid_targets = B * T;
  if (loader_) {
    data::Batch b = loader_->next();
    if (task_kinds_.empty()) {
      batch.inputs = upload(b.inputs, B, T, device_);
      batch.targets = upload(b.targets, B, T, device_);
    } else {
      std::vector<int32_t> inputs(b.inputs.begin(), b.inputs.end());
      std::vector<int32_t> targets(b.targets.begin(), b.targets.end());
      mix_tasks(inputs, targets);
      batch.inputs = upload(inputs, B, T, device_);
      batch.targets = upload(targets, B, T, device_);
    }
  } else {
    // Uniform tokens drawn on the device from Philox(seed, step, rank): no host traffic.
    uint64_t offset = (uint64_t(step_) * 1024 + uint64_t(rank_)) * uint64_t(2 * B * (T + 1));
    double vocab = double(recipe_.model.vocab_size);
    Tensor draws =
        ops::uniform({B, T + 1}, recipe_.train.seed, offset, 0.0, vocab, DType::f32, device_);
    Tensor tokens = ops::cast(draws, DType::i32);
    batch.inputs = tokens.slice(1, 0, T).contiguous();
    batch.targets = tokens.slice(1, 1, T + 1).contiguous();
  }
  ++step_;
  return batch;
}

}  // namespace infllm::train
