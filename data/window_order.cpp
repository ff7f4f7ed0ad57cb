#include "data/window_order.h"

#include "core/error.h"

namespace infllm::data {

namespace {

// SplitMix64 finalizer: a fast 64-bit mixer whose output bits all depend on all input bits.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

constexpr uint64_t kOffsetStream = 0x6F66667365747321ull;  // keeps offsets apart from orders

}  // namespace

WindowOrder::WindowOrder(int64_t num_tokens, int64_t T, uint64_t seed, bool shift_epochs)
    : T_(T), seed_(seed), shift_epochs_(shift_epochs) {
  INFLLM_CHECK(T >= 1, "loader: sequence length T = ", T, " must be at least 1");
  num_windows_ = shift_epochs ? (num_tokens - T) / T : (num_tokens - 1) / T;
  if (num_windows_ < 0) num_windows_ = 0;
  while ((int64_t{1} << (2 * half_bits_)) < num_windows_) ++half_bits_;
}

int64_t WindowOrder::permute(int64_t epoch, int64_t index) const {
  INFLLM_CHECK(0 <= index && index < num_windows_, "window order: index ", index, " outside [0, ",
               num_windows_, ")");
  const uint64_t key = mix(seed_ ^ mix(static_cast<uint64_t>(epoch)));
  const uint64_t mask = (uint64_t{1} << half_bits_) - 1;
  uint64_t x = static_cast<uint64_t>(index);
  // Cycle walking: the Feistel network permutes [0, 4^half_bits); following x through it
  // until it lands below N again restricts it to a permutation of [0, N). Since
  // 4^half_bits < 4N, this takes fewer than 4 passes on average.
  do {
    uint64_t left = x >> half_bits_;
    uint64_t right = x & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      const uint64_t next = left ^ (mix(key + round * 0x632BE59BD9B4E019ull + right) & mask);
      left = right;
      right = next;
    }
    x = (left << half_bits_) | right;
  } while (x >= static_cast<uint64_t>(num_windows_));
  return static_cast<int64_t>(x);
}

int64_t WindowOrder::offset(int64_t epoch) const {
  if (!shift_epochs_) return 0;
  return static_cast<int64_t>(mix(seed_ ^ mix(static_cast<uint64_t>(epoch) ^ kOffsetStream)) %
                              static_cast<uint64_t>(T_));
}

int64_t WindowOrder::window_start(int64_t sample) const {
  INFLLM_CHECK(sample >= 0 && num_windows_ > 0, "window order: sample ", sample,
               " needs a non-negative index and at least one window");
  const int64_t epoch = sample / num_windows_;
  return offset(epoch) + permute(epoch, sample % num_windows_) * T_;
}

}  // namespace infllm::data
