// Division by a divisor known only at run time but fixed for a whole kernel (the heads per KV
// group G, say), as a multiply-high, an add and a shift instead of the ~20 instructions of a
// general integer division (Granlund and Montgomery, "Division by invariant integers using
// multiplication", 1994, figure 4.1). On the Hopper sparse attention passes, whose per-row index
// math divides by G, the general division was a fifth of all instructions executed.
#pragma once

#include <cstdint>

#include "core/host_device.h"

namespace infllm {

struct Divisor {
  int value = 1;
  uint32_t multiplier = 1;  // floor(2^32 (2^shift - value) / value) + 1
  int shift = 0;            // ceil(log2 value)

  Divisor() = default;
  explicit Divisor(int d) : value(d) {
    while ((int64_t(1) << shift) < d) ++shift;
    multiplier =
        uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - uint64_t(d))) / uint64_t(d) + 1);
  }

  // Exact for 0 <= n < 2^31 (the high product is below n, so the sum stays in 32 bits).
  INFLLM_HOST_DEVICE int quotient(int n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t high = __umulhi(uint32_t(n), multiplier);
#else
    const uint32_t high = uint32_t((uint64_t(uint32_t(n)) * multiplier) >> 32);
#endif
    return int((high + uint32_t(n)) >> shift);
  }
  INFLLM_HOST_DEVICE int remainder(int n) const {
    return n - quotient(n) * value;
  }
};

}  // namespace infllm
