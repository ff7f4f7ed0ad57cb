// Philox4x32-10 counter-based RNG (Salmon et al., SC'11). Element i of a fill with (seed, offset)
// draws from counter offset + i, so CPU and CUDA produce the same numbers for the same
// (seed, offset) regardless of how the work is split across threads.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/host_device.h"

namespace infllm {

struct Philox4 {
  uint32_t v[4];
};

INFLLM_HOST_DEVICE inline uint32_t mul_hi32(uint32_t a, uint32_t b) {
  return uint32_t((uint64_t(a) * uint64_t(b)) >> 32);
}

INFLLM_HOST_DEVICE inline Philox4 philox4x32(uint64_t counter, uint64_t seed) {
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0 = mul_hi32(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    uint32_t hi1 = mul_hi32(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 random bits: exactly representable in f32, identical everywhere.
INFLLM_HOST_DEVICE inline float philox_uniform(uint64_t counter, uint64_t seed) {
  return float(philox4x32(counter, seed).v[0] >> 8) * (1.0f / 16777216.0f);
}

// Standard normal by Box-Muller, computed in f64 so both backends round to the same f32.
INFLLM_HOST_DEVICE inline float philox_normal(uint64_t counter, uint64_t seed) {
  Philox4 r = philox4x32(counter, seed);
  double u1 = (double(r.v[0] >> 8) + 1.0) * (1.0 / 16777217.0);  // (0, 1]: log is finite
  double u2 = double(r.v[1] >> 8) * (1.0 / 16777216.0);
  return float(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

}  // namespace infllm
