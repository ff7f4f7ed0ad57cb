// The training data loader: batches of B sequences of T tokens per rank, read from a token
// file in the order that WindowOrder gives, prefetched on a background thread.
//
// Batch `step` of rank r holds global samples i = step * world * B + r * B + b, b in [0, B).
// So the data is a pure function of (file, T, seed, step, rank, world): a resumed run only
// needs the step, ranks never read the same window within an epoch, and a run resumed with a
// different world size but the same global batch (world * B) sees the same global sequence.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "data/host_buffer.h"
#include "data/token_file.h"
#include "data/window_order.h"

namespace infllm::data {

struct LoaderOptions {
  int64_t T = 1024;  // tokens per sequence; each reads a window of T + 1 tokens
  int64_t B = 1;     // sequences per batch on this rank
  int rank = 0;
  int world = 1;
  uint64_t seed = 0;
  int prefetch = 2;          // batches prepared ahead on a background thread; 0: none
  bool pinned = true;        // page-locked batch memory when a GPU is present
  bool shift_epochs = true;  // cut each epoch's windows at a seeded offset in [0, T)
};

// A view of one batch. Valid until the next call to next() or set_step() on its loader.
struct Batch {
  int64_t step = 0;
  int64_t B = 0;
  int64_t T = 0;
  std::span<const int32_t> inputs;   // [B, T] row-major: tokens [start, start + T)
  std::span<const int32_t> targets;  // [B, T] row-major: tokens [start + 1, start + T + 1)
  bool pinned = false;               // page-locked: cudaMemcpyAsync from it is asynchronous
};

class Loader {
 public:
  Loader(const std::string& path, LoaderOptions options);
  ~Loader();  // stops and joins the prefetch thread
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The batch of step(), then advances the step. An error on the prefetch thread (e.g. a
  // damaged file) is rethrown here.
  Batch next();
  int64_t step() const;  // the step whose batch next() returns
  // Resume: the following next() returns the batch of `step`, exactly as a run that got there
  // by calling next() `step` times.
  void set_step(int64_t step);

  int64_t num_windows() const { return order_.num_windows(); }
  int64_t epoch() const;  // the epoch that the first sample of step() belongs to
  int64_t vocab_size() const { return file_.vocab_size(); }
  const LoaderOptions& options() const { return options_; }
  const WindowOrder& order() const { return order_; }

 private:
  struct Slot {
    HostBuffer buffer;  // [inputs B*T int32 | targets B*T int32]
    int64_t step = -1;  // the step it holds, -1 while empty or being filled
  };

  void fill(int64_t step, Slot& slot);
  Batch view(const Slot& slot) const;
  void prefetch_loop();

  TokenFile file_;
  LoaderOptions options_;
  WindowOrder order_;
  std::vector<Slot> slots_;       // a ring: the batch handed out + options_.prefetch ahead
  std::vector<uint32_t> window_;  // T + 1 tokens, used only by the filling thread

  mutable std::mutex mutex_;
  std::condition_variable produced_;
  std::condition_variable consumed_;
  int64_t consume_step_ = 0;  // the step next() returns
  int64_t produce_step_ = 0;  // the step the prefetch thread fills next
  uint64_t generation_ = 0;   // bumped by set_step: batches filled before are discarded
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace infllm::data
