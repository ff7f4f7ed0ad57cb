#include "data/loader.h"

#include <limits>

#include "core/error.h"

namespace infllm::data {

Loader::Loader(const std::string& path, LoaderOptions options)
    : file_(path),
      options_(options),
      order_(file_.num_tokens(), options.T, options.seed, options.shift_epochs) {
  INFLLM_CHECK(options_.B >= 1, "loader: batch size B = ", options_.B, " must be at least 1");
  INFLLM_CHECK(options_.world >= 1 && 0 <= options_.rank && options_.rank < options_.world,
               "loader: rank ", options_.rank, " is outside world size ", options_.world);
  INFLLM_CHECK(options_.prefetch >= 0, "loader: prefetch depth ", options_.prefetch,
               " must be >= 0");
  INFLLM_CHECK(file_.vocab_size() <= std::numeric_limits<int32_t>::max(), "loader: '", path,
               "' has vocab_size ", file_.vocab_size(), ", too large for int32 token ids");
  const int64_t needed = options_.shift_epochs ? 2 * options_.T : options_.T + 1;
  INFLLM_CHECK(order_.num_windows() >= 1, "loader: '", path, "' has ", file_.num_tokens(),
               " tokens, fewer than the ", needed, " that one sequence of T = ", options_.T,
               " needs; lower the sequence length or use a larger corpus");
  const size_t bytes = 2 * options_.B * options_.T * sizeof(int32_t);
  slots_.resize(options_.prefetch + 1);
  for (Slot& slot : slots_) slot.buffer = HostBuffer(bytes, options_.pinned);
  window_.resize(options_.T + 1);
  if (options_.prefetch > 0) thread_ = std::thread(&Loader::prefetch_loop, this);
}

Loader::~Loader() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  consumed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Loader::fill(int64_t step, Slot& slot) {
  const int64_t B = options_.B;
  const int64_t T = options_.T;
  int32_t* inputs = static_cast<int32_t*>(slot.buffer.data());
  int32_t* targets = inputs + B * T;
  const int64_t first_sample = (step * options_.world + options_.rank) * B;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t start = order_.window_start(first_sample + b);
    file_.read(start, start + T + 1, window_.data());
    for (int64_t t = 0; t < T; ++t) {
      inputs[b * T + t] = static_cast<int32_t>(window_[t]);
      targets[b * T + t] = static_cast<int32_t>(window_[t + 1]);
    }
  }
}

Batch Loader::view(const Slot& slot) const {
  const size_t count = options_.B * options_.T;
  const int32_t* inputs = static_cast<const int32_t*>(slot.buffer.data());
  return Batch{slot.step,
               options_.B,
               options_.T,
               std::span(inputs, count),
               std::span(inputs + count, count),
               slot.buffer.pinned()};
}

void Loader::prefetch_loop() {
  const int64_t depth = options_.prefetch;
  std::unique_lock lock(mutex_);
  while (true) {
    consumed_.wait(lock,
                   [&] { return stop_ || (!error_ && produce_step_ < consume_step_ + depth); });
    if (stop_) return;
    const int64_t step = produce_step_;
    const uint64_t generation = generation_;
    // Slot step % (depth + 1) is free: the ring's other slots hold the batch handed out last
    // (consume_step_ - 1) and the ones ahead of it, up to consume_step_ + depth - 1.
    Slot& slot = slots_[step % slots_.size()];
    slot.step = -1;
    lock.unlock();
    std::exception_ptr error;
    try {
      fill(step, slot);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (generation != generation_) continue;  // set_step() moved on while we filled
    if (error) {
      error_ = error;
    } else {
      slot.step = step;
      produce_step_ = step + 1;
    }
    produced_.notify_all();
  }
}

Batch Loader::next() {
  if (options_.prefetch == 0) {
    Slot& slot = slots_[0];
    fill(consume_step_, slot);
    slot.step = consume_step_++;
    return view(slot);
  }
  std::unique_lock lock(mutex_);
  Slot& slot = slots_[consume_step_ % slots_.size()];
  produced_.wait(lock, [&] { return slot.step == consume_step_ || error_; });
  if (slot.step != consume_step_) std::rethrow_exception(error_);
  const Batch batch = view(slot);
  ++consume_step_;
  lock.unlock();
  consumed_.notify_all();
  return batch;
}

int64_t Loader::step() const {
  std::lock_guard lock(mutex_);
  return consume_step_;
}

void Loader::set_step(int64_t step) {
  INFLLM_CHECK(step >= 0, "loader: set_step(", step, "): the step must be >= 0");
  {
    std::lock_guard lock(mutex_);
    ++generation_;
    consume_step_ = step;
    produce_step_ = step;
    error_ = nullptr;
    for (Slot& slot : slots_) slot.step = -1;
  }
  consumed_.notify_all();
}

int64_t Loader::epoch() const {
  return step() * options_.world * options_.B / order_.num_windows();
}

}  // namespace infllm::data
