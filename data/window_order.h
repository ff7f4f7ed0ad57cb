// Which window of the token stream each training sample reads.
//
// The stream of n tokens is cut into N windows of T+1 tokens starting at offset(epoch) + k*T
// (neighbouring windows share one token: the last target of one is the first input of the
// next). Epoch e visits all N windows once, in a seeded order perm_e; global sample i reads
// window perm_{i / N}(i % N). The order is a pure function of (seed, i): no state to save,
// any rank computes any sample, and resuming at a step needs nothing but the step.
#pragma once

#include <cstdint>

namespace infllm::data {

class WindowOrder {
 public:
  // shift_epochs: draw offset(epoch) in [0, T) from the seed, so later epochs see the text cut
  // at other places; N then leaves T spare tokens for the shift.
  WindowOrder(int64_t num_tokens, int64_t T, uint64_t seed, bool shift_epochs);

  int64_t num_windows() const { return num_windows_; }
  // A bijection of [0, N) chosen by (seed, epoch): a 4-round Feistel network on the next
  // power of 4 >= N, walked until the value falls inside [0, N). O(1) time and memory.
  int64_t permute(int64_t epoch, int64_t index) const;
  int64_t offset(int64_t epoch) const;
  // First token of the window that global sample `sample` reads.
  int64_t window_start(int64_t sample) const;

 private:
  int64_t T_;
  uint64_t seed_;
  bool shift_epochs_;
  int64_t num_windows_;
  int half_bits_ = 0;  // the Feistel network permutes 2 * half_bits_ bits
};

}  // namespace infllm::data
